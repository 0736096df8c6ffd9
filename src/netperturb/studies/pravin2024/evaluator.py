"""Evaluation of a filtered network on clean and adversarial images (Pravin et al. 2024).

A network checkpoint is *filtered* (:mod:`netperturb.perturb.filters`) one layer at a time
(per-layer mode) or every layer at once (whole-network mode) at each threshold of a sweep
(:mod:`.sweeps`), and each filtered network is evaluated here in ``eval()`` mode on clean test
images and on adversarial ones (FGSM or PGD, :mod:`netperturb.core.attacks`). From the two
accuracy curves the three *filtering scores* of every layer are computed (:mod:`.scores`),
which class a layer as fragile, robust or antifragile; selective retraining then retrains only
the robust and antifragile layers (:func:`netperturb.studies.pravin2024.jobs.retrain`).

Adversarial data (:class:`AttackSpec`): ``mode="regenerate"`` (the paper's choice, default)
attacks every filtered network itself, white-box, through ``torch.func.functional_call`` with
the filtered weights; ``mode="reuse"`` attacks the unfiltered network once and evaluates every
filtered network on that fixed set. ``eps`` is in pixel units (a fraction of the [0, 1] range):
the attacks of :mod:`netperturb.core.attacks` convert it to the model's normalised input units
per channel, given the normalisation's std that the spec learns from the model's preprocessing
(:meth:`AttackSpec.for_input`; without it the inputs are taken as pixels); ``clamp`` optionally keeps the examples inside the box of valid normalised images (the
authors do not clamp).

Source: C. Pravin, I. Martino, G. Nicosia, V. Ojha, Artificial Intelligence 327 (2024) 104060,
arXiv 2312.09821; the authors' notebooks (github.com/SynapFilter/InferLink).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from netperturb.core.attacks import fgsm_with_logits, pgd
from netperturb.core.evaluate import Counts, count_logits
from netperturb.core.preprocess import Preprocess
from netperturb.core.seeds import cell_generator, cell_seed

__all__ = ["AttackSpec", "input_box", "adversarial_set", "clean_and_adversarial", "Evaluator"]


# ---------------------------------------------------------------------------------------------
# adversarial data


@dataclass(frozen=True)
class AttackSpec:
    """How adversarial examples are made.

    Attributes:
        name: ``"fgsm"`` (Goodfellow et al. 2015; the paper's attack) or ``"pgd"`` (Madry et
            al. 2018, L-infinity).
        eps: budget in pixel units (fraction of the [0, 1] range), in [0, 1]; the attacks
            convert it with ``std``.
        mode: ``"regenerate"`` (attack each filtered network, white-box) or ``"reuse"``
            (attack the unfiltered network once, evaluate every filtered one on that set).
        clamp: keep adversarial inputs inside the box of valid normalised images.
        steps, step_size, random_start: PGD only (step size default 2.5 eps / steps); the
            random start is drawn from the cell's CPU generator; ``step_size`` in pixel units.
        std: the model input's per-channel normalisation std (:meth:`for_input`); None =
            the inputs are pixels (no normalisation).
    """

    name: str = "fgsm"
    eps: float = 0.1
    mode: str = "regenerate"
    clamp: bool = False
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    std: tuple[float, ...] | None = None

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
        """From the config's ``pravin2024.attack`` mapping and a resolved ``eps``."""
        return cls(
            name=cfg.get("name", "fgsm"), eps=float(eps), mode=cfg.get("mode", "regenerate"),
            clamp=bool(cfg.get("clamp", False)), steps=int(cfg.get("steps", 10)),
            step_size=cfg.get("step_size"), random_start=bool(cfg.get("random_start", True)),
        )  # fmt: skip

    def for_input(self, preprocess: Preprocess) -> "AttackSpec":
        """This spec with ``eps`` read as pixel units for inputs normalised by ``preprocess``."""
        return replace(self, std=tuple(float(s) for s in preprocess.std))


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
    :func:`netperturb.core.attacks.fgsm`); PGD: :func:`netperturb.core.attacks.pgd` with its random
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
            _, adv = fgsm_with_logits(forward, xb, yb, attack.eps, clamp, std=attack.std)
        else:
            adv = pgd(forward, xb, yb, attack.eps, steps=attack.steps, step_size=attack.step_size,
                      random_start=attack.random_start, generator=g, std=attack.std, clamp=clamp)  # fmt: skip
        out.append(adv)
    return torch.cat(out) if out else x.detach().clone()


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
    """Clean and adversarial :class:`~netperturb.core.evaluate.Counts` of ``model`` with
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
            logits, xa = fgsm_with_logits(forward, xb, yb, attack.eps, clamp, std=attack.std)
        else:
            with torch.no_grad():
                logits = forward(xb)
            xa = pgd(forward, xb, yb, attack.eps, steps=attack.steps, step_size=attack.step_size,
                     random_start=attack.random_start, generator=g, std=attack.std, clamp=clamp)  # fmt: skip
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

    def key(self, masks: Mapping[str, Tensor], seed: int) -> str:
        """The cache key of a point: a hash of its non-empty zero sets (name -> bool mask of
        the parameter's shape), and of ``seed`` where the attack draws (PGD with a random
        start, ``regenerate``)."""
        h = hashlib.sha256()
        for name in sorted(masks):
            m = masks[name]
            if bool(m.any()):
                h.update(name.encode() + b"\0" + np.packbits(m.detach().cpu().numpy().ravel()).tobytes())
        if self.attack.name == "pgd" and self.attack.random_start and self.attack.mode == "regenerate":
            h.update(str(seed).encode())
        return h.hexdigest()

    def known(self, key: str) -> bool:
        """Whether the counts of the point with this :meth:`key` are cached."""
        return key in self._cache

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
        key = self.key(masks, seed)
        if key not in self._cache:
            if compute is not None:
                self._cache[key] = compute()
            else:
                self._cache[key] = clean_and_adversarial(
                    self.model, self.x, self.y, self.attack, overrides=overrides, x_adv=self.x_adv(), box=self.box,
                    seed=seed, batch_size=self.batch_size,
                )  # fmt: skip
        return self._cache[key]
