"""Synaptic filters: zero the weights of a layer by signed threshold (Pravin et al. 2024).

Three filters act on the ``weight`` of a Conv2d or Linear layer (biases and BatchNorm are
left alone), each a pure, deterministic function of (weights, threshold ``alpha``):

- ``filter_low`` (the "ideal low-pass" filter of the paper, ``minmax`` in the authors' code):
  zeroes every weight ``w <= alpha``;
- ``filter_high`` (the "ideal high-pass" filter, ``maxmin``): zeroes every ``w >= alpha``;
- ``filter_pulse`` (the "pulse wave" filter, ``pulseminmax``): zeroes ``w`` in the band
  ``[alpha - h, alpha + h)``, half-width ``h = (max - min) / (2 S)``.

Comparisons are made in float64 on the exact float32 weight values, so a threshold equal to
a weight (the sweep end points are the layer's min and max) counts as on it, whatever the
dtype the network runs in.

**Sweeps** (:func:`alpha_grid`). Per-layer mode sweeps ``alpha`` over ``S`` evenly spaced
points of that layer's ``[min, max]`` (``S = 25`` in the paper); whole-network mode applies
one ``alpha`` of a shared grid to every layer at once. Points are taken in *sweep order*,
from "almost nothing removed" to "everything removed": ``min -> max`` for the low and pulse
filters and ``max -> min`` for the high filter, as in the authors' code. The *position* of a
point, ``t = i / (S - 1)`` in [0, 1], is the normalised alpha used on the x axis of figures
and for the filtering scores; for the low filter ``t = (alpha - min) / (max - min)``, for the
high filter ``t = (max - alpha) / (max - min)``.

Level unit: the threshold value ``alpha`` itself (the Design page of the docs, "Result schema"), any finite real.
Unlike the magnitude perturbations, level 0 is not the identity here (``filter_low`` at 0
removes every negative weight); a filter whose zero set is empty returns ``{}`` (the clean
network), which the grid code evaluates once and reuses.

Sources: C. Pravin, I. Martino, G. Nicosia, V. Ojha, "Fragility, Robustness and
Antifragility in Deep Learning", Artificial Intelligence 327 (2024) 104060, arXiv 2312.09821,
Sec. 3 (synaptic filters); the authors' notebooks (github.com/SynapFilter/InferLink,
``synaptic_filtering.ipynb``: ``step_filter_func``, the pulse masks, ``alpha_vals``). Two
defects of that code are not reproduced: in its whole-network cell only the last layer's
filtered weights were written back (here every layer is), and its whole-network pulse filter
kept every weight (its masks ``w >= alpha + s`` / ``w < alpha - s`` with ``s > 0`` cover the
whole line); the per-layer pulse filter (``s < 0`` there) zeroes ``[alpha - h, alpha + h)``,
which is the band used here in both modes.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from netperturb.perturb.base import Perturbation

__all__ = [
    "SynapticFilter",
    "LowPassFilter",
    "HighPassFilter",
    "PulseFilter",
    "FILTERS",
    "make_filter",
    "alpha_grid",
    "pulse_half_width",
    "weight_range",
]


class SynapticFilter(Perturbation):
    """Base class of the three filters: ``filter(params, alpha, generator=None)``.

    ``params`` maps role -> tensor and must hold ``weight`` ((out, in, kh, kw) or (out, in));
    the result is ``{"weight": new tensor}`` (same shape, dtype, device; the input is never
    modified), or ``{}`` when the filter zeroes no weight. The generator is accepted for the
    :class:`~netperturb.perturb.base.Perturbation` interface and never used.
    """

    level_unit = "threshold value alpha (signed weight value)"
    max_level = math.inf
    stochastic = False
    short = ""

    def check_level(self, level: float) -> float:
        """Return ``level`` as float.

        Raises:
            ValueError: the level is not finite (any finite threshold, negative ones too, is
                allowed).
        """
        level = float(level)
        if not math.isfinite(level):
            raise ValueError(f"{self.name}: threshold {level!r} must be finite")
        return level

    def mask(self, weight: Tensor, alpha: float) -> Tensor:
        """Boolean tensor (weight's shape and device): True where the filter zeroes.

        The comparison is made on ``weight.double()``; a sweep passes the float64 copy of
        the weights once (``.double()`` of a float64 tensor is the tensor itself)."""
        return self._mask(weight.detach().double(), self.check_level(alpha))

    def _mask(self, w64: Tensor, alpha: float) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(
        self, params: Mapping[str, Tensor], level: float, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        if "weight" not in params:
            raise KeyError(f"{self.name}: params must contain 'weight', got {sorted(params)}")
        w = params["weight"]
        m = self.mask(w, level)
        if not bool(m.any()):
            return {}
        return {"weight": self.zeroed(w, m)}

    @staticmethod
    def zeroed(weight: Tensor, mask: Tensor) -> Tensor:
        """A new tensor: ``weight`` with the entries where ``mask`` (bool, same shape) is True
        set to 0 (same dtype and device; ``weight`` is not modified)."""
        with torch.no_grad():
            return torch.where(mask, torch.zeros((), dtype=weight.dtype, device=weight.device), weight.detach())

    def _apply(self, params, level, generator):  # the base class's hook; __call__ is overridden
        return self(params, level, generator)


class LowPassFilter(SynapticFilter):
    """Zero every weight ``w <= alpha`` (Pravin et al. 2024, "ideal low-pass filter";
    ``minmax`` in the authors' code)."""

    name = "filter_low"
    short = "low"

    def _mask(self, w64, alpha):
        return w64 <= alpha


class HighPassFilter(SynapticFilter):
    """Zero every weight ``w >= alpha`` (Pravin et al. 2024, "ideal high-pass filter";
    ``maxmin`` in the authors' code)."""

    name = "filter_high"
    short = "high"

    def _mask(self, w64, alpha):
        return w64 >= alpha


class PulseFilter(SynapticFilter):
    """Zero every weight in the band ``[alpha - half_width, alpha + half_width)`` (Pravin et
    al. 2024, "pulse wave filter"; ``pulseminmax`` in the authors' per-layer cell).

    Args:
        half_width: ``h >= 0``, in weight units; the sweeps use ``h = (max - min) / (2 S)``
            of the range swept (:func:`pulse_half_width`).

    Raises:
        ValueError: ``half_width`` negative or not finite.
    """

    name = "filter_pulse"
    short = "pulse"

    def __init__(self, half_width: float = 0.0):
        half_width = float(half_width)
        if not math.isfinite(half_width) or half_width < 0:
            raise ValueError(f"filter_pulse: half_width must be finite and >= 0, got {half_width!r}")
        self.half_width = half_width

    def options(self) -> dict[str, Any]:
        return {"half_width": self.half_width}

    def _mask(self, w64, alpha):
        return (w64 >= alpha - self.half_width) & (w64 < alpha + self.half_width)


#: The filters by short name (as in the config: ``low``, ``high``, ``pulse``).
FILTERS: dict[str, type[SynapticFilter]] = {
    LowPassFilter.short: LowPassFilter,
    HighPassFilter.short: HighPassFilter,
    PulseFilter.short: PulseFilter,
}



def weight_range(weights: Sequence[Tensor] | Tensor) -> tuple[float, float]:
    """(min, max) over one tensor or several (exact float values, as Python floats).

    Raises:
        ValueError: no tensor or an empty one.
    """
    tensors = [weights] if isinstance(weights, Tensor) else list(weights)
    if not tensors or any(t.numel() == 0 for t in tensors):
        raise ValueError("weight_range: need at least one non-empty tensor")
    return min(float(t.detach().min()) for t in tensors), max(float(t.detach().max()) for t in tensors)


def pulse_half_width(lo: float, hi: float, steps: int) -> float:
    """``h = (hi - lo) / (2 S)``: the pulse filter's half-width for a sweep of ``S`` points
    over ``[lo, hi]`` (Pravin et al. 2024; the authors' ``steps`` in the per-layer cell)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return (float(hi) - float(lo)) / (2 * int(steps))


def alpha_grid(kind: str, lo: float, hi: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds of one sweep, in sweep order, and their positions.

    Args:
        kind: ``"low"``, ``"high"`` or ``"pulse"``.
        lo, hi: the range swept (a layer's min and max, or the whole-network grid).
        steps: ``S >= 2`` points.

    Returns:
        ``(alphas, positions)``, both float64 arrays of length ``S``: ``alphas`` run
        ``lo -> hi`` (``hi -> lo`` for ``high``) with both ends exact
        (``numpy.linspace``); ``positions = i / (S - 1)``.

    Raises:
        ValueError: unknown kind, ``S < 2``, or ``hi < lo``.
    """
    if kind not in FILTERS:
        raise ValueError(f"unknown filter {kind!r}; known: {', '.join(FILTERS)}")
    if steps < 2:
        raise ValueError(f"a sweep needs at least 2 points, got {steps}")
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise ValueError(f"need finite lo <= hi, got [{lo}, {hi}]")
    alphas = np.linspace(hi, lo, steps) if kind == "high" else np.linspace(lo, hi, steps)
    return alphas, np.linspace(0.0, 1.0, steps)


def make_filter(kind: str, *, lo: float | None = None, hi: float | None = None, steps: int | None = None) -> SynapticFilter:
    """The filter ``kind`` (``low``, ``high``, ``pulse``); the pulse filter gets the
    half-width of a sweep of ``steps`` points over ``[lo, hi]``.

    Raises:
        ValueError: unknown kind, or ``pulse`` without ``lo``, ``hi``, ``steps``.
    """
    if kind not in FILTERS:
        raise ValueError(f"unknown filter {kind!r}; known: {', '.join(FILTERS)}")
    if kind == "pulse":
        if lo is None or hi is None or steps is None:
            raise ValueError("the pulse filter needs the sweep's lo, hi and steps for its half-width")
        return PulseFilter(pulse_half_width(lo, hi, steps))
    return FILTERS[kind]()
