"""Top-1 / top-5 accuracy and cross-entropy of a network, optionally with replaced parameters.

Accuracy is a fraction in [0, 1]. Top-k credit is *tie-aware*: an image whose true-class
logit ties with others at the top-k boundary gets the expected credit under uniform random
tie-breaking, ``clamp((k - n_greater) / n_equal, 0, 1)``. Without ties this is ordinary top-k;
with them (a layer knocked out completely can make every logit equal) the score is exactly
chance (k / C) instead of depending on which index ``topk`` happens to return first. An image
whose true-class logit is NaN gets 0 (a diverged network is a result, not a crash).

Sums are exact, so the numbers do not depend on ``batch_size`` (or on the engine's batching):
credits are kept as a :class:`fractions.Fraction` (whole credits counted as integers, tie
credits ``p / q`` with ``q <= C`` added exactly) and the per-image cross-entropies (float32)
are added exactly as dyadic rationals; :meth:`Counts.metrics` rounds once, at the end. A NaN
loss anywhere makes the summed loss NaN, an infinite one +-inf (chosen: the mean of values that
include NaN / inf, as IEEE arithmetic would give it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from netperturb.core.preprocess import Preprocess
from netperturb.core.stream import ImageStream, TensorStream

__all__ = [
    "Counts",
    "topk_credit",
    "topk_credit_parts",
    "exact_credit_sum",
    "exact_float_sum",
    "counts_from_parts",
    "count_logits",
    "reference_masks",
    "resilience_parts",
    "add_resilience",
    "evaluate",
    "evaluate_stream",
    "resolve_device",
]


@dataclass
class Counts:
    """Sums over images: ``n`` images, top-1 / top-5 credit, summed cross-entropy (nats);
    and the resilience sums (:func:`resilience_parts`): ``sdc1`` / ``sdc5`` numerators over
    ``sdc1_of`` / ``sdc5_of`` images the clean network gets right (top-1 / true class in its
    top 5), ``due`` images with a NaN or Inf logit.

    ``top1``, ``top5``, ``loss_sum``, ``sdc1`` and ``sdc5`` are exact :class:`~fractions.Fraction` s
    (``loss_sum`` is a float only when it is NaN or +-inf), so ``+=`` in any grouping gives the
    same sums.
    """

    n: int = 0
    top1: Fraction = Fraction(0)
    top5: Fraction = Fraction(0)
    loss_sum: Fraction | float = Fraction(0)
    sdc1: Fraction = Fraction(0)
    sdc1_of: int = 0
    sdc5: Fraction = Fraction(0)
    sdc5_of: int = 0
    due: int = 0

    def __iadd__(self, other: "Counts") -> "Counts":
        self.n += other.n
        self.top1 += other.top1
        self.top5 += other.top5
        self.loss_sum += other.loss_sum
        self.sdc1 += other.sdc1
        self.sdc1_of += other.sdc1_of
        self.sdc5 += other.sdc5
        self.sdc5_of += other.sdc5_of
        self.due += other.due
        return self

    def resilience(self) -> dict[str, float]:
        """``{"sdc1", "sdc5", "due"}`` as fractions (NaN where the denominator is 0, e.g. no
        clean reference was given, or the clean network gets no image right)."""
        return {
            "sdc1": _mean(self.sdc1, self.sdc1_of) if self.sdc1_of else math.nan,
            "sdc5": _mean(self.sdc5, self.sdc5_of) if self.sdc5_of else math.nan,
            "due": _mean(Fraction(self.due), self.n) if self.n else math.nan,
        }

    def metrics(self) -> dict[str, float]:
        """``{"n_images", "top1", "top5", "loss"}``: accuracies as fractions, loss = mean CE."""
        if self.n == 0:
            return {"n_images": 0, "top1": math.nan, "top5": math.nan, "loss": math.nan}
        return {
            "n_images": self.n,
            "top1": _mean(self.top1, self.n),
            "top5": _mean(self.top5, self.n),
            "loss": _mean(self.loss_sum, self.n),
        }


def _mean(total: Fraction | float, n: int) -> float:
    """total / n rounded once to the nearest float (a float total: NaN or inf, passed through)."""
    if isinstance(total, float):
        return total / n
    return float(Fraction(total) / n)


def topk_credit(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """Per-image top-k credit in [0, 1], tie-aware (see module docstring).

    Args:
        logits: (B, C) float.
        labels: (B,) int64 in [0, C).
        k: >= 1; k >= C gives 1 for every finite row.

    Returns:
        (B,) float64.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits (B, C) and labels (B,) expected, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    num, den = topk_credit_parts(logits, labels, k)
    return num.double() / den.double()


def topk_credit_parts(logits: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per-image tie-aware top-k credit as an exact fraction ``num / den``.

    ``num / den = clamp((k - n_greater) / n_equal, 0, 1)`` (module docstring) with
    ``den = max(n_equal, 1) <= C`` and ``0 <= num <= den``; NaN true-class logit: ``0 / 1``.

    Args:
        logits: (B, C) float.
        labels: (B,) int64 in [0, C).
        k: >= 1.

    Returns:
        (num, den): two (B,) int32 tensors on the logits' device.

    Raises:
        ValueError: shapes are not (B, C) and (B,).
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits (B, C) and labels (B,) expected, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    true = logits.gather(1, labels.view(-1, 1))
    greater = (logits > true).sum(1)
    den = (logits == true).sum(1).clamp_min(1)
    num = torch.minimum((k - greater).clamp_min(0), den)
    num = torch.where(torch.isnan(true.squeeze(1)), torch.zeros_like(num), num)
    return num.int(), den.int()


def exact_credit_sum(num: Tensor, den: Tensor) -> Fraction:
    """Exact sum of the fractions ``num[i] / den[i]`` (:func:`topk_credit_parts`'s output).

    Whole credits (num == den) are counted as integers; the tie credits are summed per
    denominator in int64 and added as Fractions.

    Args:
        num, den: (N,) integer tensors, ``den >= 1``.
    """
    num, den = num.detach().cpu().long(), den.detach().cpu().long()
    total = Fraction(int((num == den).sum()))
    part = (num > 0) & (num < den)
    if bool(part.any()):
        d, inv = torch.unique(den[part], return_inverse=True)
        sums = torch.zeros(len(d), dtype=torch.int64).scatter_add_(0, inv, num[part])
        for s, q in zip(sums.tolist(), d.tolist()):
            total += Fraction(s, q)
    return total


_SCALE = 1126  # 2**-1126 divides every float64 mantissa-exponent pair from np.frexp x 2**53


def exact_float_sum(values: Tensor) -> Fraction | float:
    """Exact sum of float values (any order gives the same result), as a Fraction.

    Each float64 value is ``m * 2**e`` with an integer ``m`` of 53 bits (np.frexp); the
    mantissas are summed per exponent in int64 (split in two 26/27-bit halves so that up to
    2**36 values cannot overflow) and shifted into one Python integer.

    Args:
        values: (N,) float tensor (any dtype that widens exactly to float64).

    Returns:
        The sum as a Fraction; ``math.nan`` if a value is NaN or both +inf and -inf occur,
        ``+-math.inf`` if an infinity occurs. The empty sum is ``Fraction(0)``.
    """
    v = values.detach().double().cpu().numpy().ravel()
    if np.isnan(v).any():
        return math.nan
    pinf, ninf = bool((v == np.inf).any()), bool((v == -np.inf).any())
    if pinf or ninf:
        return math.nan if pinf and ninf else (math.inf if pinf else -math.inf)
    m, e = np.frexp(v)  # v = m * 2**e, 0.5 <= |m| < 1 (m = 0 for 0)
    mant = (m * 2.0**53).astype(np.int64)  # exact: |mant| < 2**53
    shift = e.astype(np.int64) - 53 + _SCALE  # >= 0 for every float64, subnormals included
    exps, inv = np.unique(shift, return_inverse=True)
    hi = np.zeros(len(exps), np.int64)
    lo = np.zeros(len(exps), np.int64)
    np.add.at(hi, inv, mant >> 26)  # mant = hi * 2**26 + lo, 0 <= lo < 2**26
    np.add.at(lo, inv, mant & ((1 << 26) - 1))
    total = 0
    for x, h, low in zip(exps.tolist(), hi.tolist(), lo.tolist()):
        total += ((h << 26) + low) << x
    return Fraction(total, 1 << _SCALE)


def counts_from_parts(num1: Tensor, den1: Tensor, num5: Tensor, den5: Tensor, loss: Tensor) -> Counts:
    """:class:`Counts` of N images from their per-image top-1 / top-5 credit fractions
    (:func:`topk_credit_parts`) and per-image cross-entropy (N,) float."""
    return Counts(
        n=int(loss.numel()),
        top1=exact_credit_sum(num1, den1),
        top5=exact_credit_sum(num5, den5),
        loss_sum=exact_float_sum(loss),
    )


def reference_masks(reference: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Which images the clean network gets right: (true class is its unique top-1, true class
    is in its top 5 with full credit), each bool (B,), from the clean logits (B, C)."""
    reference = reference.float()
    k5 = min(5, reference.shape[1])
    n1, d1 = topk_credit_parts(reference, labels, 1)
    n5, d5 = topk_credit_parts(reference, labels, k5)
    return (n1 == d1) & (d1 == 1), n5 == d5


def resilience_parts(
    logits: Tensor, clean_top1: Tensor, clean_top5: Tensor, parts1: tuple[Tensor, Tensor], parts5: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image resilience numerators of one batch (on the logits' device, no host sync).

    - ``sdc1``: for the images the clean network classifies correctly (``clean_top1``) and
      whose faulty logits are finite, ``1 - top-1 credit`` (tie-aware, :func:`topk_credit`):
      the expected share whose top-1 prediction changes; returned as the numerator
      ``den1 - num1`` over the credit's own denominator ``den1`` (0 for other images);
    - ``sdc5``: likewise for the images whose true class is in the clean top 5
      (``clean_top5``): the true class leaves the top 5;
    - ``due``: images with a NaN or Inf logit (any class), bool. Such images count as DUE,
      never as SDC.

    Definitions (chosen, after the usage of TensorFI2 and PyTorchALFI): SDC is a silent
    misclassification of an image the fault-free ("golden") network classifies correctly;
    DUE is a detected unrecoverable error, here a non-finite output (ALFI's NaN/Inf monitor).
    The denominators are ``clean_top1.sum()`` and ``clean_top5.sum()``.

    Args:
        logits: (B, C) faulty logits.
        clean_top1, clean_top5: bool (B,) from :func:`reference_masks`.
        parts1, parts5: ``(num, den)`` top-1 / top-5 credit of ``logits`` (:func:`topk_credit_parts`).

    Returns:
        (sdc1_num (B,) int, sdc5_num (B,) int, due (B,) bool); ``sdc*_num / den*`` is the
        image's share.
    """
    finite = torch.isfinite(logits).all(1)
    (n1, d1), (n5, d5) = parts1, parts5
    s1 = torch.where(clean_top1.to(finite.device) & finite, d1 - n1, torch.zeros_like(n1))
    s5 = torch.where(clean_top5.to(finite.device) & finite, d5 - n5, torch.zeros_like(n5))
    return s1, s5, ~finite


def count_logits(
    logits: Tensor, labels: Tensor, reference: Tensor | None = None, *, masks: tuple[Tensor, Tensor] | None = None
) -> Counts:
    """:class:`Counts` of one batch of logits (B, C) against labels (B,): exact sums of the
    tie-aware credits and of the per-image float32 cross-entropy (module docstring); with the
    clean network's logits ``reference`` (B, C), or its :func:`reference_masks` ``masks``
    (two bool (B,)), also the exact SDC sums (:func:`resilience_parts`). ``due`` is counted
    either way."""
    logits = logits.float()
    loss = F.cross_entropy(logits, labels, reduction="none")
    p1 = topk_credit_parts(logits, labels, 1)
    p5 = topk_credit_parts(logits, labels, min(5, logits.shape[1]))
    c = counts_from_parts(*p1, *p5, loss)
    if reference is None and masks is None:
        c.due = int((~torch.isfinite(logits).all(1)).sum())
        return c
    ok1, ok5 = masks if masks is not None else reference_masks(reference, labels)
    s1, s5, due = resilience_parts(logits, ok1, ok5, p1, p5)
    add_resilience(c, s1, p1[1], s5, p5[1], due, int(ok1.sum()), int(ok5.sum()))
    return c


def add_resilience(c: Counts, s1: Tensor, d1: Tensor, s5: Tensor, d5: Tensor, due: Tensor, of1: int, of5: int) -> Counts:
    """Set ``c``'s exact SDC / DUE sums from per-image parts (:func:`resilience_parts`) of the
    same images ``c`` counts, and the SDC denominators ``of1`` / ``of5``; returns ``c``."""
    c.sdc1, c.sdc5 = exact_credit_sum(s1, d1), exact_credit_sum(s5, d5)
    c.due = int(due.sum())
    c.sdc1_of, c.sdc5_of = of1, of5
    return c


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; anything else is passed to torch.device.

    Raises:
        RuntimeError: a CUDA device was asked for and none is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return dev


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    preprocess: Preprocess | None,
    *,
    batch_size: int = 256,
    overrides: Mapping[str, Tensor] | None = None,
) -> Counts:
    """Evaluate ``model`` (in eval mode) on uint8 ``images`` (N, C, H, W) with ``labels`` (N,).

    With ``preprocess=None`` the images are taken as model inputs already (float, e.g.
    adversarial examples). :func:`evaluate_stream` on a
    :class:`~netperturb.core.stream.TensorStream` of ``images`` and ``labels`` in batches of
    ``batch_size``.

    ``overrides`` maps full parameter names (``features.0.weight``) to replacement tensors;
    the model itself is never modified (``torch.func.functional_call``). Images and labels
    are moved batch by batch to the model's device. The SDC sums are against the model
    itself (without overrides; an extra forward pass per batch when there are overrides).

    Raises:
        ValueError: the model is in training mode (BatchNorm/Dropout would change the result);
            uint8 images with ``preprocess=None``.
    """
    if model.training:
        raise ValueError("evaluate() needs the model in eval() mode")
    return evaluate_stream(model, TensorStream(images, labels, preprocess, batch_size), overrides=overrides)


@torch.no_grad()
def evaluate_stream(model: nn.Module, stream: ImageStream, *, overrides: Mapping[str, Tensor] | None = None) -> Counts:
    """Evaluate ``model`` (in eval mode, on its device) on every batch of ``stream``
    (:mod:`netperturb.core.stream`; read once, batch by batch).

    ``overrides`` maps full parameter names (``features.0.weight``) to replacement tensors;
    the model itself is never modified (``torch.func.functional_call``). The SDC sums are
    against the model itself (without overrides; an extra forward pass per batch when there
    are overrides).

    Returns:
        The exact :class:`Counts` over the stream's images.

    Raises:
        ValueError: the model is in training mode (BatchNorm/Dropout would change the result).
    """
    if model.training:
        raise ValueError("evaluate() needs the model in eval() mode")
    device = next(model.parameters()).device
    total = Counts()
    for b in stream.batches(device):
        if overrides:
            logits = functional_call(model, dict(overrides), (b.x,), strict=False)
            reference = model(b.x)
        else:
            logits = reference = model(b.x)
        total += count_logits(logits, b.y, reference)
    return total
