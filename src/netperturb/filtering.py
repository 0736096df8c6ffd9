"""The synaptic filtering study of Pravin et al. 2024: sweeps, filtering scores, retraining.

A network checkpoint is *filtered* (:mod:`netperturb.filters`) one layer at a time (per-layer
mode) or every layer at once (whole-network mode) at each threshold of a sweep, and each
filtered network is evaluated in ``eval()`` mode on clean test images and on adversarial ones
(FGSM or PGD, :mod:`netperturb.attacks`). From the two accuracy curves the three *filtering
scores* of every layer are computed, which class a layer as fragile, robust or antifragile;
selective retraining then retrains only the robust and antifragile layers.

Adversarial data (:class:`AttackSpec`): ``mode="regenerate"`` (the paper's choice, default)
attacks every filtered network itself, white-box, through ``torch.func.functional_call`` with
the filtered weights; ``mode="reuse"`` attacks the unfiltered network once and evaluates every
filtered network on that fixed set. ``eps`` is in the units of the model's input (normalised
images), as in the authors' code; ``clamp`` optionally keeps the examples inside the box of
valid normalised images (the authors do not clamp).

**Filtering scores** (:func:`filtering_scores`). The paper defines three scores per parameter
group from (i) the clean curve, (ii) the adversarial curve and (iii) their difference, each the
integral of a normalised performance curve against normalised alpha compared with a baseline;
the normalisation and baseline are not given in a form we could recover (and are undefined in
the authors' notebooks), so this is our definition:

- x axis: the sweep position ``t`` in [0, 1] (normalised alpha, :func:`netperturb.filters.alpha_grid`);
- accuracies are divided by ``A_c``, the clean top-1 accuracy of the *unfiltered* network at
  the same checkpoint (one normaliser for all three curves, so that an adversarial accuracy
  near 0 does not blow up);
- the baseline curve of each score is the unfiltered network's own value, a constant:
  ``1`` for clean, ``A_a / A_c`` for adversarial (``A_a`` = unfiltered adversarial accuracy),
  ``(A_a - A_c) / A_c`` for the difference ``adversarial - clean``;
- score = ``scipy.integrate.simpson(curve - baseline, x=t)``.

So ``f_clean = int (acc_c(t) - A_c) dt / A_c``, ``f_adv = int (acc_a(t) - A_a) dt / A_c`` and
``f_diff = f_adv - f_clean`` (by linearity): 0 means the filter leaves the performance as it
was (on average over the sweep), -1 the worst possible clean curve. A score below
``-tolerance`` classes the group *fragile*, above ``+tolerance`` *antifragile*, otherwise
*robust* (Pravin et al. 2024: performance changed negatively, invariantly, positively). The
difference is taken as ``adversarial - clean`` so that, as for the other two, a positive
score is the better outcome (the adversarial accuracy moves up relative to the clean one).

**Selective retraining** (:func:`retrain`): only the parameters of the selected layers
(weight and bias, and with ``include_bn`` the affine terms and running statistics of the
BatchNorm fed directly by the layer) are trained; every other parameter has
``requires_grad=False`` and is left out of the optimiser, and every other BatchNorm stays in
``eval()`` mode, so all of them - running statistics included - are bit-for-bit unchanged.

Source: C. Pravin, I. Martino, G. Nicosia, V. Ojha, Artificial Intelligence 327 (2024) 104060,
arXiv 2312.09821; the authors' notebooks (github.com/SynapFilter/InferLink).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from . import __version__
from .attacks import _clamp, pgd
from .data import Preprocess
from .engine import SplitError, available_memory, split_at_layer, widen_roles
from .evaluate import Counts, count_logits
from .filters import FILTERS, alpha_grid, make_filter, weight_range
from .layers import LayerInfo
from .seeds import cell_generator, cell_seed

log = logging.getLogger("netperturb")

__all__ = [
    "AttackSpec",
    "input_box",
    "clean_and_adversarial",
    "adversarial_set",
    "Evaluator",
    "PrefixReuse",
    "layer_sweep",
    "network_sweep",
    "SWEEP_COLUMNS",
    "SCORE_COLUMNS",
    "SCORES",
    "CLASSES",
    "filtering_score",
    "classify",
    "filtering_scores",
    "retraining_selection",
    "freeze_for_retraining",
]

#: Columns of the sweep and baseline tables (one row per point and data set).
SWEEP_COLUMNS = [
    "study", "dataset", "model", "arch", "init", "epoch", "mode", "layer", "layer_label", "layer_index",
    "perturbation", "level", "position", "step", "lo", "hi", "n_weights", "n_filtered",
    "data", "attack", "eps", "attack_mode", "repeat", "seed", "n_images", "top1", "top5", "loss",
    "weights", "precision", "device", "netperturb_version",
]  # fmt: skip

#: Columns of the score table (one row per group and score).
SCORE_COLUMNS = [
    "study", "dataset", "model", "arch", "init", "epoch", "mode", "layer", "layer_label", "layer_index",
    "perturbation", "filter", "score", "value", "class", "tolerance", "n_points", "metric",
    "baseline_clean", "baseline_adversarial",
]  # fmt: skip

SCORES = ("clean", "adversarial", "difference")
CLASSES = ("fragile", "robust", "antifragile")


# ---------------------------------------------------------------------------------------------
# adversarial data


@dataclass(frozen=True)
class AttackSpec:
    """How adversarial examples are made.

    Attributes:
        name: ``"fgsm"`` (Goodfellow et al. 2015; the paper's attack) or ``"pgd"`` (Madry et
            al. 2018, L-infinity).
        eps: budget in model-input units (normalised images), >= 0.
        mode: ``"regenerate"`` (attack each filtered network, white-box) or ``"reuse"``
            (attack the unfiltered network once, evaluate every filtered one on that set).
        clamp: keep adversarial inputs inside the box of valid normalised images.
        steps, step_size, random_start: PGD only (step size default 2.5 eps / steps); the
            random start is drawn from the cell's CPU generator.
    """

    name: str = "fgsm"
    eps: float = 0.1
    mode: str = "regenerate"
    clamp: bool = False
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True

    def __post_init__(self) -> None:
        if self.name not in ("fgsm", "pgd"):
            raise ValueError(f"attack: unknown attack {self.name!r} (fgsm, pgd)")
        if self.mode not in ("regenerate", "reuse"):
            raise ValueError(f"attack mode: {self.mode!r} is not regenerate or reuse")
        if not (self.eps >= 0 and math.isfinite(self.eps)):
            raise ValueError(f"attack eps must be finite and >= 0, got {self.eps}")
        if self.steps < 1:
            raise ValueError(f"attack steps must be >= 1, got {self.steps}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], eps: float) -> "AttackSpec":
        """From the config's ``synaptic_filtering.attack`` mapping and a resolved ``eps``."""
        return cls(
            name=cfg.get("name", "fgsm"), eps=float(eps), mode=cfg.get("mode", "regenerate"),
            clamp=bool(cfg.get("clamp", False)), steps=int(cfg.get("steps", 10)),
            step_size=cfg.get("step_size"), random_start=bool(cfg.get("random_start", True)),
        )  # fmt: skip


def input_box(preprocess: Preprocess, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """(low, high), each (1, C, 1, 1): the normalised values of pixel intensities 0 and 1
    (``(0 - mean) / std``, ``(1 - mean) / std``), i.e. the box of valid model inputs."""
    mean = torch.tensor(preprocess.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


def _forward(model: nn.Module, overrides: Mapping[str, Tensor] | None):
    if overrides:
        params = dict(overrides)
        return lambda x: functional_call(model, params, (x,), strict=False)
    return model


def _batches(n: int, batch_size: int) -> Iterable[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def adversarial_set(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: AttackSpec,
    *,
    overrides: Mapping[str, Tensor] | None = None,
    box: tuple[Tensor, Tensor] | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> Tensor:
    """Adversarial examples (N, C, H, W) of inputs ``x`` (float, model input space) with labels
    ``y`` (N,) against ``model`` (eval mode) with ``overrides`` swapped in.

    FGSM: ``x + eps sign(grad_x CE)`` (mean cross-entropy per batch, as
    :func:`netperturb.attacks.fgsm`); PGD: :func:`netperturb.attacks.pgd` with its random
    start drawn from ``cell_generator(seed)`` (consecutive draws, so the batch split does not
    change the numbers). ``box`` clamps when ``attack.clamp``.
    """
    forward = _forward(model, overrides)
    clamp = box if attack.clamp else None
    g = cell_generator(seed)
    out = []
    for sl in _batches(len(y), batch_size):
        xb, yb = x[sl], y[sl]
        if attack.name == "fgsm":
            _, adv = _fgsm_with_logits(forward, xb, yb, attack.eps, clamp)
        else:
            adv = pgd(forward, xb, yb, attack.eps, steps=attack.steps, step_size=attack.step_size,
                      random_start=attack.random_start, generator=g, clamp=clamp)  # fmt: skip
        out.append(adv)
    return torch.cat(out) if out else x.detach().clone()


def _fgsm_with_logits(forward, x: Tensor, y: Tensor, eps: float, clamp) -> tuple[Tensor, Tensor]:
    """FGSM exactly as :func:`netperturb.attacks.fgsm`, also returning the clean logits of the
    same forward pass (so a clean evaluation costs nothing extra)."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = forward(xg)
        loss = F.cross_entropy(logits, y)
        (grad,) = torch.autograd.grad(loss, xg)
    return logits.detach(), _fgsm_step(x, grad, eps, clamp)


def _fgsm_step(x: Tensor, grad: Tensor, eps: float, clamp) -> Tensor:
    """``clamp(x + eps sign(grad))``, detached; ``x`` itself (a copy) for eps 0."""
    if eps == 0:
        return x.detach().clone()
    return _clamp(x.detach() + eps * grad.sign(), clamp).detach()


def clean_and_adversarial(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: AttackSpec,
    *,
    overrides: Mapping[str, Tensor] | None = None,
    x_adv: Tensor | None = None,
    box: tuple[Tensor, Tensor] | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[Counts, Counts]:
    """Clean and adversarial :class:`~netperturb.evaluate.Counts` of ``model`` with
    ``overrides`` (full parameter name -> tensor; the model is never modified).

    Args:
        model: network in ``eval()`` mode.
        x: (N, C, H, W) float inputs in the model's input space; y: (N,) int64 labels.
        attack: :class:`AttackSpec`. With ``attack.mode == "reuse"`` pass the fixed
            adversarial set as ``x_adv`` (same shape as x); otherwise the examples are made
            against this very network (white-box).
        seed: the cell's seed (PGD random start).

    Raises:
        ValueError: the model is in training mode, or ``reuse`` without ``x_adv``.
    """
    if model.training:
        raise ValueError("clean_and_adversarial() needs the model in eval() mode")
    if attack.mode == "reuse" and x_adv is None:
        raise ValueError("attack mode 'reuse' needs the fixed adversarial set x_adv")
    forward = _forward(model, overrides)
    clamp = box if attack.clamp else None
    clean, adv = Counts(), Counts()
    g = cell_generator(seed)
    for sl in _batches(len(y), batch_size):
        xb, yb = x[sl], y[sl]
        if x_adv is not None and attack.mode == "reuse":
            with torch.no_grad():
                clean += count_logits(forward(xb), yb)
                adv += count_logits(forward(x_adv[sl]), yb)
            continue
        if attack.name == "fgsm":
            logits, xa = _fgsm_with_logits(forward, xb, yb, attack.eps, clamp)
        else:
            with torch.no_grad():
                logits = forward(xb)
            xa = pgd(forward, xb, yb, attack.eps, steps=attack.steps, step_size=attack.step_size,
                     random_start=attack.random_start, generator=g, clamp=clamp)  # fmt: skip
        clean += count_logits(logits, yb)
        with torch.no_grad():
            adv += count_logits(forward(xa), yb)
    return clean, adv


# ---------------------------------------------------------------------------------------------
# sweeps


@dataclass
class Evaluator:
    """Evaluates filtered versions of one checkpoint on fixed data; the unit of a sweep job.

    Attributes:
        model: network in eval mode (never modified).
        x, y: inputs (N, C, H, W) float in the model's input space, labels (N,).
        attack: :class:`AttackSpec`; in ``reuse`` mode the adversarial set is made once,
            against the unfiltered network, on first use.
        box: valid-input box for clamping (:func:`input_box`).
        seed_key: (study seed, model key) from which cell seeds derive.
        batch_size: images per forward pass.

    Results of identical filtered networks (same zero sets) are computed once: the
    unfiltered network (empty zero set) and, e.g., the fully zeroed layer that both step
    filters reach at the end of their sweeps.
    """

    model: nn.Module
    x: Tensor
    y: Tensor
    attack: AttackSpec
    box: tuple[Tensor, Tensor] | None = None
    study_seed: int = 0
    model_key: str = ""
    batch_size: int = 256

    def __post_init__(self) -> None:
        self._cache: dict[str, tuple[Counts, Counts]] = {}
        self._x_adv: Tensor | None = None

    def x_adv(self) -> Tensor | None:
        """The fixed adversarial set (``reuse`` mode), else None."""
        if self.attack.mode != "reuse":
            return None
        if self._x_adv is None:
            seed = cell_seed(self.study_seed, self.model_key, "", "none", 0.0, 0)
            self._x_adv = adversarial_set(self.model, self.x, self.y, self.attack, box=self.box, seed=seed,
                                          batch_size=self.batch_size)  # fmt: skip
        return self._x_adv

    def __call__(
        self,
        overrides: Mapping[str, Tensor],
        masks: Mapping[str, Tensor],
        seed: int,
        compute: Callable[[], tuple[Counts, Counts]] | None = None,
    ) -> tuple[Counts, Counts]:
        """Counts (clean, adversarial) of the network with ``overrides``; ``masks`` (name ->
        bool zero set) key the cache. PGD results depend on ``seed``, so they are cached per
        seed as well. ``compute`` computes the counts on a cache miss instead of the generic
        path (:func:`clean_and_adversarial` on the whole network), e.g.
        :meth:`PrefixReuse.counts` for the same overrides."""
        h = hashlib.sha256()
        for name in sorted(masks):
            m = masks[name]
            if bool(m.any()):
                h.update(name.encode() + b"\0" + np.packbits(m.detach().cpu().numpy().ravel()).tobytes())
        if self.attack.name == "pgd" and self.attack.random_start and self.attack.mode == "regenerate":
            h.update(str(seed).encode())
        key = h.hexdigest()
        if key not in self._cache:
            if compute is not None:
                self._cache[key] = compute()
            else:
                self._cache[key] = clean_and_adversarial(
                    self.model, self.x, self.y, self.attack, overrides=overrides, x_adv=self.x_adv(), box=self.box,
                    seed=seed, batch_size=self.batch_size,
                )  # fmt: skip
        return self._cache[key]


class PrefixReuse:
    """Clean-prefix reuse for the sweep of one layer (DESIGN.md, "Performance design", 2).

    Every point of a per-layer sweep changes only that layer, so the part of the network
    below it (the *prefix*) sees the same images at every point. The network's ``torch.fx``
    graph is cut at the layer (:func:`netperturb.engine.split_at_layer`, which also hands
    over a ResNet block's skip tensor or an Inception block's other branches) and the
    prefix runs once per batch of images; per point:

    - FGSM, ``regenerate`` (the paper's setting): the prefix outputs of the clean images are
      kept *with their autograd graph*. The filtered layer and the rest of the network run
      forward and backward, and the gradient is pulled back to the images through the kept
      graph (``retain_graph``): the prefix's forward pass is saved, its backward pass still
      runs (the input gradient depends on the filtered layer). The adversarial images then
      go through the whole network. Per point: 2 forward + 1 backward pass minus the
      prefix's forward (ResNet-18 on digits, one CPU thread: 0.21-0.34 s per point instead
      of 0.27-0.36 s; ``bench/filtering_sweep.py``).
    - PGD, ``regenerate``: the clean pass reuses the prefix; the attack's steps and the
      adversarial pass run the whole network.
    - ``reuse`` mode: the prefix outputs of the clean images and of the fixed adversarial
      set are both kept; per point only the layer and the rest of the network run, twice.

    The counts equal those of the generic path (:func:`clean_and_adversarial` with the
    filtered weight swapped into the whole network through ``functional_call``): the same
    operations on the same values (``tests/test_filtering_prefix.py`` compares counts and
    losses; on ResNet-18 / digits every sweep point of the default study was identical).

    Memory: the kept values (with graphs) of as many batches as fit in half of the free
    memory of the device (:func:`netperturb.engine.available_memory`, measured on the
    first batch with ``saved_tensors_hooks``); any other batch recomputes its prefix at
    every point, with the same numbers.

    Args:
        ev: the sweep's :class:`Evaluator` (model in eval mode, images, attack).
        layer: the filtered layer; its ``bn`` (a BatchNorm fed only by it) runs with it.

    Raises:
        netperturb.engine.SplitError: the graph cannot be cut at the layer (the model does
            not trace, the layer is called more than once, ...); use the generic path.
    """

    def __init__(self, ev: Evaluator, layer: LayerInfo):
        self.ev = ev
        self.split = split_at_layer(ev.model, layer, ev.x[: min(2, len(ev.x))])
        self._tensors = self.split.clean_tensors()
        self._with_graph = ev.attack.mode == "regenerate" and ev.attack.name == "fgsm"
        self._slices = list(_batches(len(ev.y), ev.batch_size))
        self._kept: list[tuple[Tensor | None, tuple[Tensor, ...], tuple[Tensor, ...] | None]] = []
        self._budget = available_memory(ev.x.device) // 2

    @property
    def kept_batches(self) -> int:
        """Batches whose prefix outputs are kept (the others recompute them per point)."""
        return len(self._kept)

    def _logits(self, live: Sequence[Tensor], weight: Tensor) -> Tensor:
        """The network from the prefix's outputs ``live``, with the layer's weight replaced.
        The suffix gets copies of the values it reads: it may update one in place (a ResNet
        block's ``out += identity`` when the layer is the shortcut), and the kept values
        must stay as they are."""
        sp = self.split
        wide = widen_roles([{**self._tensors, "weight": weight}], sp)
        u = sp.unit(live[sp.unit_input], wide, 1)
        return sp.suffix(u, *[live[i].clone() for i in sp.suffix_live])

    def _forward(self, weight: Tensor):
        return lambda z: self._logits(self.split.prefix(z), weight)

    def _prefix(self, b: int) -> tuple[Tensor | None, tuple[Tensor, ...], tuple[Tensor, ...] | None]:
        """(images with grad or None, prefix outputs of the clean images, prefix outputs of
        the fixed adversarial set or None) of batch ``b``: kept, or computed now."""
        if b < len(self._kept):
            return self._kept[b]
        ev, sl = self.ev, self._slices[b]
        saved = 0

        def pack(t: Tensor) -> Tensor:
            nonlocal saved
            saved += t.numel() * t.element_size()
            return t

        xg = None
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            if self._with_graph:
                xg = ev.x[sl].detach().clone().requires_grad_(True)
                with torch.enable_grad():
                    live = tuple(self.split.prefix(xg))
            else:
                with torch.no_grad():
                    live = tuple(self.split.prefix(ev.x[sl]))
        live_adv = None
        x_adv = ev.x_adv()
        if x_adv is not None:
            with torch.no_grad():
                live_adv = tuple(self.split.prefix(x_adv[sl]))
        entry = (xg, live, live_adv)
        size = saved + sum(t.numel() * t.element_size() for t in (*live, *(live_adv or ())))
        if b == len(self._kept) and size * (b + 1) <= self._budget:
            self._kept.append(entry)
        return entry

    def counts(self, weight: Tensor, seed: int) -> tuple[Counts, Counts]:
        """Clean and adversarial :class:`~netperturb.evaluate.Counts` of the network with
        this layer's weight replaced by ``weight`` (same shape; e.g. a filtered copy);
        ``seed`` is the point's seed (PGD's random start)."""
        ev, attack = self.ev, self.ev.attack
        clamp = ev.box if attack.clamp else None
        clean, adv = Counts(), Counts()
        g = cell_generator(seed)
        for b, sl in enumerate(self._slices):
            xg, live, live_adv = self._prefix(b)
            yb = ev.y[sl]
            if live_adv is not None:  # reuse mode
                with torch.no_grad():
                    clean += count_logits(self._logits(live, weight), yb)
                    adv += count_logits(self._logits(live_adv, weight), yb)
                continue
            if attack.name == "fgsm":
                leaves = [v.detach().requires_grad_(v.requires_grad) for v in live]  # storage shared, never written
                with torch.enable_grad():
                    logits = self._logits(leaves, weight)
                    need = [i for i, v in enumerate(leaves) if v.requires_grad]
                    grads = torch.autograd.grad(F.cross_entropy(logits, yb), [leaves[i] for i in need], allow_unused=True)
                    pairs = [(live[i], gr) for i, gr in zip(need, grads) if gr is not None]
                    (grad,) = torch.autograd.grad([p for p, _ in pairs], xg, [gr for _, gr in pairs], retain_graph=True)
                xa = _fgsm_step(ev.x[sl], grad, attack.eps, clamp)
                logits = logits.detach()
            else:
                with torch.no_grad():
                    logits = self._logits(live, weight)
                xa = pgd(self._forward(weight), ev.x[sl], yb, attack.eps, steps=attack.steps, step_size=attack.step_size,
                         random_start=attack.random_start, generator=g, clamp=clamp)  # fmt: skip
            clean += count_logits(logits, yb)
            with torch.no_grad():
                adv += count_logits(self._forward(weight)(xa), yb)
        return clean, adv


def _point_rows(base: dict, counts: tuple[Counts, Counts], attack: AttackSpec) -> list[dict]:
    rows = []
    for data, c in zip(("clean", "adversarial"), counts):
        rows.append({**base, "data": data, "attack": attack.name, "eps": attack.eps, "attack_mode": attack.mode,
                     "repeat": 0, **c.metrics()})  # fmt: skip
    return rows


def _named(model: nn.Module) -> dict[str, Tensor]:
    return dict(model.named_parameters())


def layer_sweep(
    ev: Evaluator,
    layer: LayerInfo,
    filters: Sequence[str],
    steps: int,
    *,
    row: Mapping[str, Any] | None = None,
    progress: bool = True,
    bar: tqdm | None = None,
    reuse_prefix: bool = True,
) -> list[dict]:
    """Per-layer mode: every filter in ``filters`` swept over ``steps`` points of this layer's
    weight range ``[min, max]`` (:func:`netperturb.filters.alpha_grid`); the other layers are
    untouched.

    Args:
        ev: the :class:`Evaluator` of the checkpoint.
        layer: the Conv2d / Linear layer filtered.
        filters: ``low``, ``high``, ``pulse``.
        steps: S points per filter.
        row: values for the provenance columns (study, model, ...).
        progress: show a progress bar (one per call) unless ``bar`` is given.
        bar: a progress bar to advance by one per point (a job sweeping several layers
            shows one bar).
        reuse_prefix: evaluate through :class:`PrefixReuse` (same counts, less arithmetic);
            if the graph cannot be cut at the layer, the generic path is used and a
            warning is logged.

    Returns:
        rows of :data:`SWEEP_COLUMNS` (minus the provenance ones given in ``row``): two per
        point (``data`` clean and adversarial), filters in the given order, points in sweep
        order.
    """
    name = f"{layer.path}.weight"
    weight = _named(ev.model)[name]
    w64 = weight.detach().double()  # the filters compare in float64; converted once
    lo, hi = weight_range(weight)
    path = None
    if reuse_prefix:
        try:
            path = PrefixReuse(ev, layer)
        except SplitError as e:
            log.warning("%s: no clean-prefix reuse for %s, whole network per point (%s)", ev.model_key, layer.path, e)
    rows: list[dict] = []
    own = bar is None
    if own:
        bar = tqdm(total=len(filters) * steps, desc=f"{ev.model_key}:{layer.label}", disable=not progress, mininterval=5)
    for kind in filters:
        flt = make_filter(kind, lo=lo, hi=hi, steps=steps)
        alphas, positions = alpha_grid(kind, lo, hi, steps)
        for i, (alpha, pos) in enumerate(zip(alphas, positions)):
            mask = flt.mask(w64, alpha)
            new = flt.zeroed(weight, mask) if bool(mask.any()) else None
            seed = cell_seed(ev.study_seed, ev.model_key, layer.path, flt.name, alpha, 0)
            compute = None
            if path is not None:
                compute = lambda: path.counts(weight if new is None else new, seed)  # noqa: E731
            counts = ev({} if new is None else {name: new}, {name: mask}, seed, compute)
            base = {**(row or {}), "mode": "layer", "layer": layer.path, "layer_label": layer.label,
                    "layer_index": layer.index, "perturbation": flt.name, "level": float(alpha),
                    "position": float(pos), "step": i, "lo": lo, "hi": hi, "n_weights": weight.numel(),
                    "n_filtered": int(mask.sum()), "seed": seed}  # fmt: skip
            rows += _point_rows(base, counts, ev.attack)
            bar.update()
    if own:
        bar.close()
    return rows


def network_sweep(
    ev: Evaluator,
    layers: Sequence[LayerInfo],
    filters: Sequence[str],
    steps: int,
    *,
    grid: tuple[float, float] | None = None,
    row: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Whole-network mode: one threshold of a shared grid applied to the weights of *every*
    layer in ``layers`` at once (all of them written back).

    Args:
        grid: ``(lo, hi)`` of the shared grid; None = the range of all those layers' weights
            together (the authors' code used a fixed [-1, 1]; configurable).

    Returns:
        rows as :func:`layer_sweep`, with ``mode="network"``, ``layer="all"``,
        ``layer_index=0`` and ``n_filtered`` / ``n_weights`` summed over the layers.
    """
    named = _named(ev.model)
    names = [f"{l.path}.weight" for l in layers]
    weights = [named[n] for n in names]
    weights64 = [w.detach().double() for w in weights]
    lo, hi = grid if grid is not None else weight_range(weights)
    rows: list[dict] = []
    bar = tqdm(total=len(filters) * steps, desc=f"{ev.model_key}:network", disable=not progress, mininterval=5)
    for kind in filters:
        flt = make_filter(kind, lo=lo, hi=hi, steps=steps)
        alphas, positions = alpha_grid(kind, lo, hi, steps)
        for i, (alpha, pos) in enumerate(zip(alphas, positions)):
            overrides, masks, n_filtered = {}, {}, 0
            for n, w, w64 in zip(names, weights, weights64):
                masks[n] = flt.mask(w64, alpha)
                n_filtered += int(masks[n].sum())
                if bool(masks[n].any()):
                    overrides[n] = flt.zeroed(w, masks[n])
            seed = cell_seed(ev.study_seed, ev.model_key, "all", flt.name, alpha, 0)
            counts = ev(overrides, masks, seed)
            base = {**(row or {}), "mode": "network", "layer": "all", "layer_label": "all", "layer_index": 0,
                    "perturbation": flt.name, "level": float(alpha), "position": float(pos), "step": i,
                    "lo": float(lo), "hi": float(hi), "n_weights": sum(w.numel() for w in weights),
                    "n_filtered": n_filtered, "seed": seed}  # fmt: skip
            rows += _point_rows(base, counts, ev.attack)
            bar.update()
    bar.close()
    return rows


def network_overrides(model: nn.Module, layers: Sequence[LayerInfo], kind: str, alpha: float, *,
                      lo: float, hi: float, steps: int) -> dict[str, Tensor]:
    """The filtered weights of every layer in ``layers`` at one threshold of the shared grid
    ``[lo, hi]`` (whole-network mode): full parameter name -> new tensor, for every layer
    whose zero set is not empty."""
    named = _named(model)
    flt = make_filter(kind, lo=lo, hi=hi, steps=steps)
    out = {}
    for l in layers:
        new = flt({"weight": named[f"{l.path}.weight"]}, alpha)
        if new:
            out[f"{l.path}.weight"] = new["weight"]
    return out


def baseline_rows(ev: Evaluator, row: Mapping[str, Any] | None = None) -> list[dict]:
    """The unfiltered network: two rows (clean, adversarial) with ``mode="none"``,
    ``perturbation="none"``, ``level=0``."""
    seed = cell_seed(ev.study_seed, ev.model_key, "", "none", 0.0, 0)
    counts = ev({}, {}, seed)
    base = {**(row or {}), "mode": "none", "layer": "", "layer_label": "", "layer_index": 0, "perturbation": "none",
            "level": 0.0, "position": 0.0, "step": 0, "lo": math.nan, "hi": math.nan, "n_weights": 0,
            "n_filtered": 0, "seed": seed}  # fmt: skip
    return _point_rows(base, counts, ev.attack)


def sweep_frame(rows: Sequence[Mapping[str, Any]], *, precision: str = "fp32", device: str = "cpu") -> pd.DataFrame:
    """Rows -> DataFrame with :data:`SWEEP_COLUMNS` (provenance filled in)."""
    df = pd.DataFrame(list(rows))
    df["precision"] = precision
    df["device"] = device
    df["netperturb_version"] = __version__
    for c in SWEEP_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    return df[SWEEP_COLUMNS]


# ---------------------------------------------------------------------------------------------
# scores


def filtering_score(positions: Sequence[float], curve: Sequence[float], baseline: float | Sequence[float]) -> float:
    """``scipy.integrate.simpson(curve - baseline, x=positions)``.

    Args:
        positions: increasing x values (normalised alpha in [0, 1]), at least 2.
        curve: normalised performance at each position.
        baseline: constant or per-position baseline curve.

    Returns:
        The signed area between the curve and the baseline (NaN if any value is NaN).

    Raises:
        ValueError: fewer than 2 points, mismatched lengths or non-increasing positions.
    """
    from scipy.integrate import simpson

    x = np.asarray(positions, dtype=np.float64)
    yv = np.asarray(curve, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if x.ndim != 1 or x.shape != yv.shape or len(x) < 2:
        raise ValueError(f"need >= 2 matching points, got positions {x.shape} and curve {yv.shape}")
    if np.any(np.diff(x) <= 0):
        raise ValueError("positions must be strictly increasing")
    if np.isnan(yv).any():
        return math.nan
    return float(simpson(yv, x=x))


def classify(value: float, tolerance: float) -> str:
    """``fragile`` if value < -tolerance, ``antifragile`` if value > tolerance, else
    ``robust``; ``undefined`` for NaN."""
    if value != value:
        return "undefined"
    if value < -tolerance:
        return "fragile"
    if value > tolerance:
        return "antifragile"
    return "robust"


_GROUP = ["study", "dataset", "model", "arch", "init", "epoch", "mode", "layer", "layer_label", "layer_index", "perturbation"]


def filtering_scores(
    sweeps: pd.DataFrame, baselines: pd.DataFrame, *, tolerance: float = 0.05, metric: str = "top1"
) -> pd.DataFrame:
    """The three filtering scores of every (model, init, epoch, mode, layer, filter) curve.

    Args:
        sweeps: tidy sweep table (:data:`SWEEP_COLUMNS`, ``data`` clean and adversarial).
        baselines: the unfiltered networks' rows (``mode == "none"``), one clean and one
            adversarial row per (model, init, epoch).
        tolerance: half-width of the *robust* band (score units, see module docstring).
        metric: ``top1`` or ``top5``.

    Returns:
        :data:`SCORE_COLUMNS`, one row per curve and score (``clean``, ``adversarial``,
        ``difference``).

    Raises:
        ValueError: a curve has no baseline, or its clean and adversarial points differ.
    """
    base = baselines.pivot_table(index=["model", "init", "epoch"], columns="data", values=metric, aggfunc="first")
    rows = []
    for key, g in sweeps.groupby(_GROUP, sort=True):
        rec = dict(zip(_GROUP, key))
        try:
            a_c, a_a = (float(base.loc[(rec["model"], rec["init"], rec["epoch"]), d]) for d in ("clean", "adversarial"))
        except KeyError:
            raise ValueError(f"no baseline for model {rec['model']} init {rec['init']} epoch {rec['epoch']}") from None
        wide = g.pivot_table(index="position", columns="data", values=metric, aggfunc="first").sort_index()
        if wide[["clean", "adversarial"]].isna().any().any():
            raise ValueError(f"curve {rec}: clean and adversarial points do not match")
        t = wide.index.to_numpy()
        norm = a_c if a_c > 0 else math.nan
        c = wide["clean"].to_numpy() / norm
        a = wide["adversarial"].to_numpy() / norm
        values = {
            "clean": filtering_score(t, c, 1.0),
            "adversarial": filtering_score(t, a, a_a / norm),
            "difference": filtering_score(t, a - c, a_a / norm - 1.0),
        }
        kind = next((k for k, cls in FILTERS.items() if cls.name == rec["perturbation"]), rec["perturbation"])
        for score, value in values.items():
            rows.append({**rec, "filter": kind, "score": score, "value": value, "class": classify(value, tolerance),
                         "tolerance": tolerance, "n_points": len(t), "metric": metric,
                         "baseline_clean": a_c, "baseline_adversarial": a_a})  # fmt: skip
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


# ---------------------------------------------------------------------------------------------
# selective retraining


def retraining_selection(
    scores: pd.DataFrame,
    *,
    model: str,
    init: int,
    epoch: int,
    score: str = "adversarial",
    filter: str = "mean",
    tolerance: float = 0.05,
    select: Sequence[str] = ("robust", "antifragile"),
) -> pd.DataFrame:
    """Which layers (per-layer mode) selective retraining trains, for one checkpoint.

    A layer's value is its ``score`` under ``filter`` (``low``/``high``/``pulse``), or the mean
    over the filters swept (``mean``); it is selected when ``classify(value, tolerance)`` is
    in ``select``. (The paper retrains "the robust and antifragile parameters"; which filter's
    scores decide is our choice, configurable.)

    Returns:
        one row per layer: ``layer, layer_label, layer_index, value, class, selected``, in
        depth order.

    Raises:
        ValueError: no per-layer scores for that checkpoint, or unknown score / filter.
    """
    if score not in SCORES:
        raise ValueError(f"retraining score {score!r} not in {SCORES}")
    if filter != "mean" and filter not in FILTERS:
        raise ValueError(f"retraining filter {filter!r} not mean or one of {list(FILTERS)}")
    s = scores[(scores["model"] == model) & (scores["init"] == init) & (scores["epoch"] == epoch)
               & (scores["mode"] == "layer") & (scores["score"] == score)]  # fmt: skip
    if filter != "mean":
        s = s[s["filter"] == filter]
    if s.empty:
        raise ValueError(f"no per-layer {score} scores for model {model} init {init} epoch {epoch} (filter {filter})")
    out = s.groupby(["layer_index", "layer", "layer_label"], sort=True)["value"].mean().reset_index()
    out["class"] = [classify(v, tolerance) for v in out["value"]]
    out["selected"] = out["class"].isin(list(select))
    return out[["layer", "layer_label", "layer_index", "value", "class", "selected"]]


def freeze_for_retraining(
    model: nn.Module, layers: Sequence[LayerInfo], *, include_bn: bool = True
) -> tuple[list[str], list[nn.Module]]:
    """Make only the parameters of ``layers`` trainable, in place.

    Every parameter gets ``requires_grad=False`` except the weight and bias of each layer in
    ``layers`` and, with ``include_bn``, the affine terms of the BatchNorm fed directly by it
    (:attr:`LayerInfo.bn`); that BatchNorm also keeps training-mode running statistics.

    Returns:
        ``(trainable parameter names, frozen modules)``: the modules to keep in ``eval()``
        mode during training - every BatchNorm whose parameters are frozen (pass them to
        :func:`netperturb.training.train_classifier` as ``frozen_modules``), so that their
        running statistics stay bit-for-bit the same.
    """
    prefixes = set()
    for l in layers:
        prefixes.add(l.path)
        if include_bn and l.bn is not None:
            prefixes.add(l.bn)
    trainable = []
    for name, p in model.named_parameters():
        owner = name.rpartition(".")[0]
        p.requires_grad_(owner in prefixes)
        if owner in prefixes:
            trainable.append(name)
    frozen = [m for path, m in model.named_modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and path not in prefixes]  # fmt: skip
    return trainable, frozen
