"""Three readings of "the interval" in Shen et al.'s Min-Max property, computed side by side.

Shen, Chen, Wang 2021 (IJMLC 12:1853, arXiv 2011.13719, abstract) say that during backprop
training the conv weights "move away from the centres of their intervals" towards the minimum
or the maximum. Which interval is not said in the parts we could read, and the verdict depends
on it, so every reading below is computed from the same training run (each one chosen; none is
the authors'):

- ``current``: the tensor's own ``[min W_t, max W_t]`` at snapshot ``t`` (of the whole layer,
  or of one kernel ``W_t[i]`` in the kernel scope):
  ``mu = (w_t - min W_t) / (max W_t - min W_t)``. A few outlying weights widen the interval
  and squeeze every other position towards the centre.
- ``init_bound``: the fixed interval of PyTorch's default initialisation of Conv2d / Linear,
  ``[-b, b]`` with ``b = 1 / sqrt(fan_in)`` (``reset_parameters`` calls
  ``kaiming_uniform_(w, a=sqrt(5))``: gain ``sqrt(2 / (1 + a^2)) = sqrt(1/3)``, bound
  ``gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in)``; ``fan_in = in_channels / groups * kh * kw``
  or ``in_features``, i.e. ``W[0].numel()``): ``mu = (w_t + b) / (2 b)`` for the weights
  still inside ``[-b, b]``; a weight beyond the bound has no position (NaN, left out of the
  fuzziness and the near-an-end fractions) and is counted in ``frac_outside`` instead.
  **What it measures**: where the weights that stayed inside the initial interval sit within
  it, and (``frac_outside``) how many left it. It used to count a weight beyond the bound as
  at its end (``mu`` clamped, F = 0); then the fuzziness fell as soon as the spread of the
  weights grew, which a driftless walk of the same steps also does, so that reading could
  not separate learning from diffusion.
- ``trajectory``: each weight's own range over training up to ``t``, over the values it took
  after every optimiser step and at initialisation:
  ``mu = (w_t - min_{s<=t} w_s) / (max_{s<=t} w_s - min_{s<=t} w_s)``; ``mu = 1`` means the
  weight is at the largest value it ever had, 0 at the smallest. NaN while the weight has
  not moved (at initialisation every position is NaN). **What it measures**: whether each
  weight ends at an extreme of its own history; a weight that only diffuses also ends near
  one (the last point of a random walk tends to lie near an end of its range), so this
  reading means something only against the driftless walk control.

``current`` **measures** the shape of the layer's weight distribution between its own
extremes: F falls when the mass moves towards both tails (a bimodal layer), rises when it
becomes bell-shaped; a few outliers widen the interval and raise F.

**Controls** (:mod:`netperturb.studies.shen2021.controls`): every reading is also taken, at the
same snapshots, on (a) the *driftless walk* -- the run's own per-step updates of each weight
with random signs, tracked during the real run as a shadow copy of the tracked weights -- and
(b) a network trained the same way on *shuffled labels*; a fall that these also show is
diffusion or spread, not learning.

Fuzziness and "near an end" are those of :mod:`netperturb.studies.shen2021.minmax` applied to
each reading's ``mu``. Under ``current`` and ``init_bound`` Kaiming-uniform initial weights
have uniform ``mu`` (F about 1/2), so "fuzziness falls over training" compares with the
initialisation. Under ``trajectory`` there is no initial value; the reference is what a weight
would show that only diffused: the expected fuzziness of the last point of a driftless
Gaussian random walk within its own range (:func:`random_walk_reference`). A walk's last point
already lies nearer the ends of its range than a uniform draw would (F below 1/2), so a
reading of F < 1/2 alone would not show a drift to the extremes.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from netperturb.core.layers import LayerInfo

__all__ = ["READINGS", "SCOPES", "interval_position", "init_bound", "reading_position", "RunningRange",
           "random_walk_reference"]  # fmt: skip

#: The readings of the interval, in report order.
READINGS = ("current", "init_bound", "trajectory")

#: Where the interval [min, max] is taken: over the whole layer, or over each kernel (output unit).
SCOPES = ("layer", "kernel")


def _rows(w: Tensor, scope: str) -> Tensor:
    """(1, n) for the layer scope, (n_out, n / n_out) for the kernel scope."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if w.ndim < 1 or w.numel() == 0:
        raise ValueError(f"need a non-empty weight tensor, got shape {tuple(w.shape)}")
    return w.reshape(1, -1) if scope == "layer" or w.ndim == 1 else w.reshape(w.shape[0], -1)


def interval_position(w: Tensor, scope: str = "layer") -> Tensor:
    """Position of every weight in its interval, ``mu = (w - min) / (max - min)``.

    Args:
        w: a weight tensor, e.g. Conv2d (out, in, kh, kw) or Linear (out, in).
        scope: ``"layer"`` (one interval for the whole tensor) or ``"kernel"`` (one interval
            per output unit ``w[i]``).

    Returns:
        Tensor of ``w``'s shape, values in [0, 1] (exactly 0 at the minimum, 1 at the maximum).
        A degenerate interval (max == min, e.g. an all-zero kernel) gives NaN for its
        weights: the position is undefined (recorded as such, not hidden).

    Raises:
        ValueError: unknown scope or an empty tensor.
    """
    rows = _rows(w.detach(), scope)
    lo = rows.amin(dim=1, keepdim=True)
    hi = rows.amax(dim=1, keepdim=True)
    span = hi - lo
    mu = (rows - lo) / torch.where(span > 0, span, torch.ones_like(span))
    mu = torch.where(span > 0, mu, torch.full_like(mu, math.nan))
    return mu.reshape(w.shape)


def init_bound(weight: Tensor) -> float:
    """PyTorch's default-initialisation bound ``b = 1 / sqrt(fan_in)`` of a Conv2d / Linear weight.

    ``nn.Conv2d`` / ``nn.Linear.reset_parameters`` draw ``U(-b, b)`` with
    ``kaiming_uniform_(a=sqrt(5))``: ``b = sqrt(2 / (1 + 5)) * sqrt(3 / fan_in) = 1 / sqrt(fan_in)``
    (torch.nn.init; ``fan_in`` = ``weight[0].numel()``: ``in_channels / groups * kh * kw`` or
    ``in_features``).

    Args:
        weight: (out, in, kh, kw) or (out, in).

    Returns:
        ``b`` (> 0), in the weight's units.

    Raises:
        ValueError: a weight with fewer than 2 dimensions or fan_in 0.
    """
    if weight.ndim < 2 or weight[0].numel() == 0:
        raise ValueError(f"need a Conv/Linear weight (>= 2 dims, fan_in > 0), got shape {tuple(weight.shape)}")
    return 1.0 / math.sqrt(weight[0].numel())


def reading_position(
    w: Tensor,
    reading: str,
    *,
    scope: str = "layer",
    bound: float | None = None,
    run_min: Tensor | None = None,
    run_max: Tensor | None = None,
) -> Tensor:
    """Position ``mu`` of every weight under one reading of the interval (module docstring).

    Args:
        w: weight tensor at the snapshot (any shape).
        reading: one of :data:`READINGS`.
        scope: ``current`` only: ``"layer"`` or ``"kernel"`` interval
            (:func:`interval_position`); the other readings
            do not depend on it.
        bound: ``init_bound``: ``b`` of :func:`init_bound` (> 0).
        run_min, run_max: ``trajectory``: the weight's running minimum and maximum, ``w``'s shape.

    Returns:
        Tensor of ``w``'s shape in [0, 1]; NaN where the position is undefined (``current``:
        max == min; ``init_bound``: a weight beyond the bound; ``trajectory``: a weight that
        never moved).

    Raises:
        ValueError: unknown reading, or the reading's argument missing / of the wrong shape.
    """
    if reading == "current":
        return interval_position(w, scope)
    if reading == "init_bound":
        if bound is None or not bound > 0:
            raise ValueError(f"reading 'init_bound' needs bound > 0, got {bound}")
        w = w.detach()
        mu = (w + bound) / (2 * bound)
        return torch.where(w.abs() <= bound, mu, torch.full_like(mu, math.nan))
    if reading == "trajectory":
        if run_min is None or run_max is None or run_min.shape != w.shape or run_max.shape != w.shape:
            raise ValueError("reading 'trajectory' needs run_min and run_max of the weight's shape")
        span = run_max - run_min
        mu = (w.detach() - run_min) / torch.where(span > 0, span, torch.ones_like(span))
        return torch.where(span > 0, mu.clamp(0.0, 1.0), torch.full_like(mu, math.nan))
    raise ValueError(f"reading must be one of {READINGS}, got {reading!r}")


class RunningRange:
    """Each tracked weight's minimum and maximum over the values it took: one pair of tensors
    per layer, updated in place after every optimiser step (two element-wise ops per layer,
    no history kept).

    Args:
        model: the network at initialisation (the first values of the range).
        layers: the layers whose ``.weight`` is tracked.
    """

    def __init__(self, model: nn.Module, layers: Sequence[LayerInfo]):
        self.lo: dict[str, Tensor] = {}
        self.hi: dict[str, Tensor] = {}
        self.bound: dict[str, float] = {}
        for info in layers:
            w = model.get_submodule(info.path).weight.detach()
            self.lo[info.path] = w.clone()
            self.hi[info.path] = w.clone()
            self.bound[info.path] = init_bound(w) if w.ndim >= 2 else math.nan

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights into the ranges."""
        for path, lo in self.lo.items():
            w = model.get_submodule(path).weight
            torch.minimum(lo, w, out=lo)
            torch.maximum(self.hi[path], w, out=self.hi[path])


def random_walk_reference(
    n_steps: int, *, end_fraction: float = 0.1, n_walks: int = 4096, max_steps: int = 4096, seed: int = 0
) -> tuple[float, float]:
    """Fuzziness and fraction near an end of the last point of a driftless walk within its own
    range: the ``trajectory`` reading of a weight that only diffuses.

    A Gaussian random walk ``x_0 = 0, x_k = x_{k-1} + N(0, 1)`` of ``n`` steps
    (``n = min(n_steps, max_steps)``; beyond a few thousand steps the distribution of the
    last point's position is that of Brownian motion and no longer changes), ``mu = (x_n -
    min_k x_k) / (max_k x_k - min_k x_k)``; returns the mean over ``n_walks`` walks of the
    De Luca-Termini term ``-(mu ln mu + (1 - mu) ln(1 - mu))`` and of ``[mu <= e or mu >= 1 - e]``.
    Chosen reference (Monte Carlo with a fixed seed, so the value is reproducible).

    Raises:
        ValueError: ``n_steps < 1`` or ``end_fraction`` not in (0, 0.5).
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if not 0 < end_fraction < 0.5:
        raise ValueError(f"end_fraction must be in (0, 0.5), got {end_fraction}")
    n = min(int(n_steps), int(max_steps))
    rng = np.random.default_rng(seed)
    f, ends = [], []
    for start in range(0, n_walks, 512):
        k = min(512, n_walks - start)
        x = np.concatenate([np.zeros((k, 1)), np.cumsum(rng.standard_normal((k, n)), axis=1)], axis=1)
        lo, hi = x.min(1), x.max(1)
        mu = (x[:, -1] - lo) / (hi - lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.where((mu > 0) & (mu < 1), mu * np.log(mu) + (1 - mu) * np.log(1 - mu), 0.0)
        f.append(-h)
        ends.append((mu <= end_fraction) | (mu >= 1 - end_fraction))
    return float(np.concatenate(f).mean()), float(np.concatenate(ends).mean())
