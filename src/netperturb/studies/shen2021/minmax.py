"""The Min-Max property of conv weights (Shen, Chen, Wang 2021): interval position, fuzziness,
a fuzziness regulariser, weight tracking during training, and robust accuracy.

Source: H. Shen, S. Chen, R. Wang, "A Study on the Uncertainty of Convolutional Layers in Deep
Neural Networks", Int. J. Mach. Learn. & Cybern. 12 (2021) 1853-1865, arXiv 2011.13719.
Their claim (abstract): during backprop training of LeNet the weights of the conv layers move
away from the centres of their intervals towards the minimum or the maximum (the *Min-Max
property*); this corresponds to minimising the *fuzziness* of the parameters; models with the
property are more robust to adversarial examples, so it can be built into the loss.

**Operationalisation (ours; the paper's exact formulas are not public and there is no code).**
Only the abstract and the opening of the introduction could be read. Every definition below
is therefore a documented choice, marked "chosen" where it is one:

- *Interval* of a layer: ``[min W, max W]`` over the whole weight tensor (``scope="layer"``);
  of a *kernel*: over one output unit's weights ``W[i]`` (a conv filter ``W[i, :, :, :]``, a
  dense row ``W[i, :]``), the unit node knockout removes (``scope="kernel"``). Chosen. This
  is the ``current`` reading; the tracking also records two others side by side, the fixed
  interval of the initialisation (``init_bound``) and each weight's own range over training
  (``trajectory``): :mod:`netperturb.studies.shen2021.intervals`. The regulariser uses
  ``current``.
- *Position* in the interval (a membership degree): ``mu = (w - min) / (max - min)`` in
  [0, 1]; 0 at the minimum, 1 at the maximum, 1/2 at the centre.
- *Fuzziness*: De Luca & Termini's (1972) entropy of a fuzzy set, normalised by the number
  of elements: ``F = -mean(mu ln mu + (1 - mu) ln(1 - mu))`` with ``0 ln 0 = 0``; 0 when every
  weight sits at an end, ln 2 when every weight sits at the centre. Chosen as the
  "fuzziness of the model parameters" of the abstract.
- *Near an end*: ``mu <= e`` or ``mu >= 1 - e`` with ``e = end_fraction`` (default 0.1, "within
  10% of either end"). The minimum and maximum themselves always count.
- *Regulariser*: ``lambda * mean over the chosen layers of F(layer)``; see
  :class:`FuzzinessRegularizer` for how min/max enter the gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from netperturb.core.evaluate import Counts, count_logits
from netperturb.core.layers import LayerInfo
from netperturb.core.preprocess import Preprocess
from netperturb.core.seeds import cell_generator, cell_seed
from netperturb.studies.shen2021.intervals import (
    READINGS,
    SCOPES,
    RunningRange,
    _rows,
    init_bound,
    interval_position,
    reading_position,
)

__all__ = [
    "SCOPES",
    "interval_position",
    "fuzziness",
    "differentiable_fuzziness",
    "FuzzinessRegularizer",
    "weight_stats",
    "weight_histograms",
    "first_epoch_steps",
    "WeightTracker",
    "pixel_space",
    "robust_accuracy",
    "ATTACK_CHUNK",
]

def fuzziness(mu: Tensor, dim: int | None = None) -> Tensor:
    """De Luca-Termini fuzziness, normalised: ``-mean(mu ln mu + (1 - mu) ln(1 - mu))``.

    ``0 ln 0 = 0`` (``torch.xlogy``), so ``F = 0`` when every ``mu`` is 0 or 1 and ``F = ln 2``
    when every ``mu`` is 1/2. Source: A. De Luca, S. Termini, "A definition of a
    non-probabilistic entropy in the setting of fuzzy sets theory", Information and Control
    20 (1972) 301-312, divided by the number of elements (chosen, so layers of different size
    compare).

    Args:
        mu: membership degrees in [0, 1], any shape.
        dim: reduce over this dimension only (``None``: over all elements).

    Returns:
        Scalar (or reduced) tensor, in nats, in [0, ln 2]. NaN entries propagate.

    Raises:
        ValueError: a finite ``mu`` outside [0, 1].
    """
    finite = mu[~torch.isnan(mu)]
    if finite.numel() and (finite.min() < 0 or finite.max() > 1):
        raise ValueError(f"mu must lie in [0, 1], got range [{finite.min().item()}, {finite.max().item()}]")
    h = torch.xlogy(mu, mu) + torch.xlogy(1 - mu, 1 - mu)
    return -(h.mean() if dim is None else h.mean(dim=dim))


def differentiable_fuzziness(
    w: Tensor, *, scope: str = "layer", eps: float = 1e-6, detach_bounds: bool = False
) -> Tensor:
    """:func:`fuzziness` of :func:`interval_position` as a differentiable function of ``w``.

    ``mu`` is clamped to ``[eps, 1 - eps]`` before the logarithms (the minimum and maximum
    weights sit exactly at 0 and 1, where the derivative of ``mu ln mu`` is infinite; clamped
    entries contribute ``-(eps ln eps + (1 - eps) ln(1 - eps))``, about 1.5e-5 for the default,
    and no gradient through their own ``mu``). A degenerate interval uses a span of the
    dtype's smallest normal number instead of 0.

    Gradient through the bounds (chosen): by default (``detach_bounds=False``) min and max are
    functions of the weights like any other, so the gradient is the exact gradient of the
    fuzziness that is reported (checked against finite differences in the tests); it moves
    the interior weights towards the nearer end *and* pulls the extreme weights inwards
    (shrinks the interval). With ``detach_bounds=True`` min and max are constants: only
    ``d mu / d w = 1 / (max - min)`` enters, which pushes weights towards (and past) the
    current ends and lets the interval grow.

    Args:
        w: weight tensor (any shape; kernel scope needs ``w.ndim >= 2`` to differ from layer).
        scope: ``"layer"`` or ``"kernel"``; the kernel scope averages the kernels' F (all
            kernels have the same size, so this is the mean over all weights).
        eps: clamp margin, in (0, 0.5).

    Returns:
        Scalar tensor (nats) with a graph to ``w``.
    """
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    rows = _rows(w, scope)
    lo = rows.amin(dim=1, keepdim=True)
    hi = rows.amax(dim=1, keepdim=True)
    if detach_bounds:
        lo, hi = lo.detach(), hi.detach()
    span = (hi - lo).clamp_min(torch.finfo(rows.dtype).tiny)
    mu = ((rows - lo) / span).clamp(eps, 1 - eps)
    return -(mu * mu.log() + (1 - mu) * (1 - mu).log()).mean()


class FuzzinessRegularizer:
    """``lam * mean_l F(W_l)`` over the chosen layers: the Min-Max loss term (operationalised).

    Shen et al. 2021 (abstract) build the Min-Max property "into the design of the loss
    function"; the form here is chosen: the mean of the layers' fuzziness (each layer
    counts once, whatever its size), times ``lam``, added to the mean cross-entropy.
    Use as ``train_classifier(..., regularizer=FuzzinessRegularizer(layers, lam))``.

    Args:
        layers: the layers whose ``.weight`` enters (e.g. the conv layers).
        lam: weight of the term (>= 0; 0 adds exactly 0).
        scope, eps, detach_bounds: see :func:`differentiable_fuzziness`.

    Raises:
        ValueError: no layers, ``lam < 0`` or not finite.
    """

    def __init__(
        self,
        layers: Sequence[LayerInfo],
        lam: float,
        *,
        scope: str = "layer",
        eps: float = 1e-6,
        detach_bounds: bool = False,
    ):
        if not layers:
            raise ValueError("FuzzinessRegularizer needs at least one layer")
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"lambda must be finite and >= 0, got {lam}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        self.paths = [l.path for l in layers]
        self.lam = float(lam)
        self.scope, self.eps, self.detach_bounds = scope, float(eps), bool(detach_bounds)

    def fuzziness(self, model: nn.Module) -> Tensor:
        """The mean fuzziness of the layers (the term without ``lam``), with a graph."""
        terms = [
            differentiable_fuzziness(
                model.get_submodule(p).weight, scope=self.scope, eps=self.eps, detach_bounds=self.detach_bounds
            )
            for p in self.paths
        ]
        return torch.stack(terms).mean()

    def __call__(self, model: nn.Module) -> Tensor:
        return self.lam * self.fuzziness(model)


def _positions(
    w: Tensor, info: LayerInfo, reading: str, scope: str, ranges: "RunningRange | None"
) -> Tensor:
    """``mu`` of ``w`` under ``reading``, as the scope's rows: (1, n) or (n_out, n / n_out)."""
    if reading == "trajectory" and ranges is None:
        raise ValueError("the 'trajectory' reading needs the running ranges of the weights (RunningRange)")
    kw = {}
    if reading == "init_bound":
        kw["bound"] = init_bound(w)
    elif reading == "trajectory":
        kw["run_min"] = ranges.lo[info.path].detach().cpu().to(w.dtype)
        kw["run_max"] = ranges.hi[info.path].detach().cpu().to(w.dtype)
    return _rows(reading_position(w, reading, scope=scope, **kw), scope)


def _nanmean(x: Tensor, defined: Tensor) -> Tensor:
    """Row means over the entries where ``defined``; NaN for a row with none."""
    n = defined.double().sum(1)
    s = torch.where(defined, x.double(), torch.zeros_like(x, dtype=torch.float64)).sum(1)
    return torch.where(n > 0, s / n.clamp_min(1), torch.full_like(s, math.nan))


def weight_stats(
    model: nn.Module,
    layers: Sequence[LayerInfo],
    *,
    end_fraction: float = 0.1,
    readings: Sequence[str] = ("current",),
    ranges: "RunningRange | None" = None,
) -> pd.DataFrame:
    """Interval statistics of every layer (``scope="layer"``, ``kernel = -1``) and of every
    kernel of it (``scope="kernel"``, ``kernel = i``), under each reading of the interval
    (column ``interval``; :mod:`netperturb.studies.shen2021.intervals`): ``current`` (the
    tensor's own [min, max]; in the kernel scope each kernel in its own interval),
    ``init_bound`` (+/- 1/sqrt(fan_in)) and ``trajectory`` (each weight's own range so far,
    from ``ranges``). Under ``init_bound`` and ``trajectory`` the scope only says over which
    weights the statistics are taken.

    Columns: ``layer, layer_label, layer_index, kind, interval, scope, kernel, n_weights,
    w_min, w_max, w_mean, w_std, mu_mean, fuzziness, frac_low, frac_high, frac_ends,
    frac_outside``, where ``w_*`` describe the weights themselves, ``frac_low`` is the
    fraction of weights with ``mu <= end_fraction``, ``frac_high`` with
    ``mu >= 1 - end_fraction``, ``frac_ends`` their sum (``end_fraction < 0.5``, so no weight
    counts twice) and ``frac_outside`` the fraction beyond the interval (``init_bound`` only,
    0 otherwise). ``mu_mean``, ``fuzziness`` and the fractions are over the weights whose
    position is defined (NaN when none is: a degenerate ``current`` interval, a ``trajectory``
    before the first step). ``w_std`` has ddof = 1 (0 for a single weight).

    Raises:
        ValueError: ``end_fraction`` not in (0, 0.5), an unknown reading, ``trajectory``
            without ``ranges``.
    """
    if not 0 < end_fraction < 0.5:
        raise ValueError(f"end_fraction must be in (0, 0.5), got {end_fraction}")
    for r in readings:
        if r not in READINGS:
            raise ValueError(f"interval reading must be one of {READINGS}, got {r!r}")
    blocks = []
    for info in layers:
        w = model.get_submodule(info.path).weight.detach().cpu().double()
        for reading in readings:
            for scope in SCOPES:
                rows = _rows(w, scope)
                mu = _positions(w, info, reading, scope, ranges)
                ok = ~torch.isnan(mu)
                low = _nanmean((mu <= end_fraction).double(), ok)
                high = _nanmean((mu >= 1 - end_fraction).double(), ok)
                if reading == "init_bound":
                    outside = (rows.abs() > init_bound(w)).double().mean(1)
                else:
                    outside = torch.zeros(rows.shape[0], dtype=torch.float64)
                fz = _nanmean(-(torch.xlogy(mu, mu) + torch.xlogy(1 - mu, 1 - mu)), ok)
                n_k, n = rows.shape
                blocks.append(
                    {"layer": info.path, "layer_label": info.label, "layer_index": info.index, "kind": info.kind,
                     "interval": reading, "scope": scope,
                     "kernel": np.full(n_k, -1) if scope == "layer" else np.arange(n_k),
                     "n_weights": n, "w_min": rows.amin(1).numpy(), "w_max": rows.amax(1).numpy(),
                     "w_mean": rows.mean(1).numpy(),
                     "w_std": rows.std(1).numpy() if n > 1 else np.zeros(n_k),
                     "mu_mean": _nanmean(mu, ok).numpy(), "fuzziness": fz.numpy(),
                     "frac_low": low.numpy(), "frac_high": high.numpy(), "frac_ends": (low + high).numpy(),
                     "frac_outside": outside.numpy()}
                )  # fmt: skip
    return _stack(blocks)


def _stack(blocks: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One table from blocks of columns, in order: each block maps every column to an array
    (all of one length) or to a scalar repeated down the block. The same table as concatenating
    one DataFrame per block, built once (a training run records ~100 snapshots of ~30 blocks:
    a DataFrame per block took about a third of a LeNet-5 run's time)."""
    lengths = [max((len(v) for v in b.values() if isinstance(v, np.ndarray)), default=1) for b in blocks]
    return pd.DataFrame({
        col: np.concatenate([b[col] if isinstance(b[col], np.ndarray) else np.full(n, b[col]) for b, n in zip(blocks, lengths)])
        for col in blocks[0]
    })  # fmt: skip


def weight_histograms(
    model: nn.Module,
    layers: Sequence[LayerInfo],
    *,
    bins: int = 20,
    readings: Sequence[str] = ("current",),
    ranges: "RunningRange | None" = None,
) -> pd.DataFrame:
    """Histogram of ``mu`` over [0, 1] in ``bins`` equal bins, per layer, reading and scope
    (readings as in :func:`weight_stats`).

    ``scope="layer"``: positions in the layer's interval; ``scope="kernel"``: every weight's
    position in its own kernel's interval, pooled over the layer's kernels (the scopes differ
    only under ``current``). Bins are ``[b_j, b_{j+1})`` with the last one closed (``mu = 1``
    falls in it); counts sum to the number of weights whose position is defined (NaN
    positions are left out).

    Returns:
        Columns ``layer, layer_label, layer_index, interval, scope, bin, bin_lo, bin_hi,
        count, fraction`` (fraction of the counted weights).

    Raises:
        ValueError: ``bins < 1``, an unknown reading, ``trajectory`` without ``ranges``.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    blocks = []
    for info in layers:
        w = model.get_submodule(info.path).weight.detach().cpu().double()
        for reading in readings:
            for scope in SCOPES:
                mu = _positions(w, info, reading, scope, ranges).flatten().numpy()
                counts, _ = np.histogram(mu[~np.isnan(mu)], bins=edges)
                blocks.append(
                    {"layer": info.path, "layer_label": info.label, "layer_index": info.index,
                     "interval": reading, "scope": scope,
                     "bin": np.arange(bins), "bin_lo": edges[:-1], "bin_hi": edges[1:], "count": counts,
                     "fraction": counts / max(int(counts.sum()), 1)}
                )  # fmt: skip
    return _stack(blocks)


def first_epoch_steps(points: Iterable[float], steps_per_epoch: int) -> list[int]:
    """Optimiser steps of epoch 1 at which to take a snapshot: ``max(1, round(p * steps))`` for
    each fraction ``p`` of the first epoch, de-duplicated, sorted, and without the last step
    (that snapshot is the end of epoch 1).

    Raises:
        ValueError: a point outside (0, 1), or ``steps_per_epoch < 1``.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    steps = set()
    for p in points:
        if not 0 < p < 1:
            raise ValueError(f"first-epoch points are fractions in (0, 1), got {p}")
        s = max(1, int(round(p * steps_per_epoch)))
        if s < steps_per_epoch:
            steps.add(s)
    return sorted(steps)


@dataclass
class WeightTracker:
    """Records :func:`weight_stats` and :func:`weight_histograms` during training, under
    each reading of the interval in ``readings``.

    Plug into :func:`netperturb.core.training.train_classifier` as
    ``on_step=tracker.on_step, on_epoch_end=tracker.on_epoch_end``. Snapshots: epoch 0 (the
    initialisation), every epoch end, and the first-epoch ``steps`` (:func:`first_epoch_steps`).
    Every record gets ``epoch`` (training progress in epochs, a float: step / steps_per_epoch
    inside epoch 1), ``step`` (optimiser steps done) and the fields of ``meta``.

    Attributes:
        layers: layers to record.
        steps_per_epoch: optimiser steps per epoch.
        steps: steps of epoch 1 to record.
        bins, end_fraction: see :func:`weight_histograms`, :func:`weight_stats`.
        meta: constant columns (study, model, lambda, seed, ...), put first.
        readings: readings of the interval (:data:`~netperturb.studies.shen2021.intervals.READINGS`).
            With ``trajectory`` the tracker keeps every tracked weight's running minimum and
            maximum (:class:`~netperturb.studies.shen2021.intervals.RunningRange`), started
            at the first snapshot (call it at initialisation: ``on_epoch_end(0, ...)`` does)
            and updated after every optimiser step.
        control: the value of the ``control`` column of this run's rows (``"none"``: the
            trained run; ``"shuffled labels"``: the shuffled-label control,
            :mod:`netperturb.studies.shen2021.controls`).
        walk_seed: when set, the driftless walk control is tracked alongside
            (:class:`~netperturb.studies.shen2021.controls.DriftlessWalk` with this seed,
            started at the first snapshot, one step after every optimiser step): its
            :func:`weight_stats` rows, every reading, come with ``control = "driftless
            walk"`` at the same snapshots (no histograms).
    """

    layers: Sequence[LayerInfo]
    steps_per_epoch: int
    steps: Sequence[int] = ()
    bins: int = 20
    end_fraction: float = 0.1
    meta: Mapping[str, Any] = field(default_factory=dict)
    readings: Sequence[str] = ("current",)
    control: str = "none"
    walk_seed: int | None = None
    ranges: RunningRange | None = field(default=None, init=False, repr=False)
    walk: Any = field(default=None, init=False, repr=False)
    walk_ranges: RunningRange | None = field(default=None, init=False, repr=False)
    _stats: list = field(default_factory=list, init=False, repr=False)
    _hists: list = field(default_factory=list, init=False, repr=False)

    def _head(self, df: pd.DataFrame, epoch: float, step: int, control: str | None = None) -> pd.DataFrame:
        head = {**self.meta, "control": control or self.control, "epoch": float(epoch), "step": int(step)}
        for i, (k, v) in enumerate(head.items()):
            df.insert(i, k, v)
        return df

    def snapshot(self, model: nn.Module, epoch: float, step: int) -> None:
        """Record the model's weights now (and the driftless walk's, when tracked)."""
        from netperturb.studies.shen2021.controls import WALK, DriftlessWalk

        if "trajectory" in self.readings and self.ranges is None:
            self.ranges = RunningRange(model, self.layers)
        if self.walk_seed is not None and self.walk is None:
            self.walk = DriftlessWalk(model, self.layers, self.walk_seed)
            self.walk_ranges = RunningRange(self.walk, self.layers) if "trajectory" in self.readings else None
        kw = {"readings": self.readings, "ranges": self.ranges}
        self._stats.append(
            self._head(weight_stats(model, self.layers, end_fraction=self.end_fraction, **kw), epoch, step)
        )
        self._hists.append(self._head(weight_histograms(model, self.layers, bins=self.bins, **kw), epoch, step))
        if self.walk is not None:
            walk = weight_stats(self.walk, self.layers, end_fraction=self.end_fraction, readings=self.readings,
                                ranges=self.walk_ranges)  # fmt: skip
            self._stats.append(self._head(walk, epoch, step, WALK))

    def on_step(self, epoch: int, step: int, model: nn.Module) -> None:
        if self.ranges is not None:
            self.ranges.update(model)
        if self.walk is not None:
            self.walk.update(model)
            if self.walk_ranges is not None:
                self.walk_ranges.update(self.walk)
        if epoch == 1 and step in self.steps:
            self.snapshot(model, step / self.steps_per_epoch, step)

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, Any]) -> None:
        self.snapshot(model, epoch, epoch * self.steps_per_epoch)

    def stats(self) -> pd.DataFrame:
        """One row per (snapshot, layer, interval, scope, kernel), snapshots in the order taken."""
        return pd.concat(self._stats, ignore_index=True) if self._stats else pd.DataFrame()

    def histograms(self) -> pd.DataFrame:
        """One row per (snapshot, layer, interval, scope, bin), snapshots in the order taken."""
        return pd.concat(self._hists, ignore_index=True) if self._hists else pd.DataFrame()


def pixel_space(preprocess: Preprocess) -> tuple[Preprocess, Any, tuple[float, float]]:
    """Split a :class:`Preprocess` into (uint8 -> [0, 1] pixels at the model's input size,
    pixels -> normalised input, the valid pixel box (0, 1)).

    Attacks here perturb the *pixels* (scaled to [0, 1], after the resize to the model's
    input), so ``eps`` is a fraction of the pixel range whatever the dataset's normalisation.
    """
    to_pixels = Preprocess(scale=preprocess.scale, mean=(0.0,), std=(1.0,), size=preprocess.size)
    mean, std = preprocess.mean, preprocess.std

    def normalise(x: Tensor) -> Tensor:
        m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - m) / s

    return to_pixels, normalise, (0.0, 1.0)


#: Images per attack chunk. Fixed (not a setting): PGD's random start is drawn per chunk from
#: the chunk's own seed, so a fixed chunk size keeps results independent of any batch size.
ATTACK_CHUNK = 256


def robust_accuracy(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    preprocess: Preprocess,
    *,
    attack: str,
    eps_values: Sequence[float],
    seed_key: tuple[int, str],
    pgd_steps: int = 10,
    pgd_step_size: float | None = None,
) -> list[dict[str, Any]]:
    """Accuracy on FGSM or PGD adversarial examples, for each ``eps``.

    White-box, untargeted, L-infinity, on the cross-entropy of the true label
    (:mod:`netperturb.core.attacks`). The attack perturbs the [0, 1] pixels at the model's input
    resolution and keeps them in [0, 1]; ``eps`` is in those units (chosen; Shen et al.'s
    attack settings are not public). PGD starts from a uniform point of the ball drawn from
    the CPU generator of ``cell_seed(study_seed, name, "input", attack, eps, chunk)`` per
    chunk of :data:`ATTACK_CHUNK` images, ``(study_seed, name) = seed_key``; pass a name
    that does not contain the regularisation weight to give every lambda the same draws.

    Args:
        model: network in eval mode (its parameters need no gradient).
        images: uint8 (N, C, H, W); labels: int64 (N,).
        preprocess: the model's :class:`Preprocess`.
        attack: ``"fgsm"`` or ``"pgd"``.
        eps_values: radii, >= 0 (0 gives the clean accuracy).
        pgd_steps, pgd_step_size: PGD iterations and step (default 2.5 eps / steps).

    Returns:
        One record per eps: ``attack, eps, steps, n_images, top1, top5, loss``.

    Raises:
        ValueError: unknown attack, negative eps, or a model in training mode.
    """
    from netperturb.core.attacks import fgsm, pgd

    if attack not in ("fgsm", "pgd"):
        raise ValueError(f"attack must be 'fgsm' or 'pgd', got {attack!r}")
    if model.training:
        raise ValueError("robust_accuracy() needs the model in eval() mode")
    device = next(model.parameters()).device
    to_pixels, normalise, box = pixel_space(preprocess)

    def forward(x: Tensor) -> Tensor:
        return model(normalise(x))

    out = []
    for eps in eps_values:
        eps = float(eps)
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        total = Counts()
        for c, start in enumerate(range(0, len(labels), ATTACK_CHUNK)):
            x = to_pixels(images[start : start + ATTACK_CHUNK].to(device))
            y = labels[start : start + ATTACK_CHUNK].to(device)
            if attack == "fgsm":
                adv = fgsm(forward, x, y, eps, clamp=box)
            else:
                g = cell_generator(cell_seed(seed_key[0], seed_key[1], "input", attack, eps, c))
                adv = pgd(forward, x, y, eps, steps=pgd_steps, step_size=pgd_step_size, generator=g, clamp=box)
            with torch.no_grad():
                total += count_logits(forward(adv), y)
        out.append({"attack": attack, "eps": eps, "steps": pgd_steps if attack == "pgd" else 1, **total.metrics()})
    return out
