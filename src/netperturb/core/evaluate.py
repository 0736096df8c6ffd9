"""Top-1 / top-5 accuracy and cross-entropy of a network, optionally with replaced parameters.

Accuracy is a fraction in [0, 1]. Top-k credit is *tie-aware*: an image whose true-class
logit ties with others at the top-k boundary gets the expected credit under uniform random
tie-breaking, ``clamp((k - n_greater) / n_equal, 0, 1)``. Without ties this is ordinary top-k;
with them (a layer knocked out completely can make every logit equal) the score is exactly
chance (k / C) instead of depending on which index ``topk`` happens to return first. An image
whose true-class logit is NaN gets 0 (a diverged network is a result, not a crash).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from netperturb.core.preprocess import Preprocess

__all__ = ["Counts", "topk_credit", "count_logits", "reference_masks", "resilience_sums", "evaluate", "resolve_device"]


@dataclass
class Counts:
    """Sums over images: ``n`` images, top-1 / top-5 credit, summed cross-entropy (nats);
    and the resilience sums (:func:`resilience_sums`): ``sdc1`` / ``sdc5`` numerators over
    ``sdc1_of`` / ``sdc5_of`` images the clean network gets right (top-1 / true class in its
    top 5), ``due`` images with a NaN or Inf logit."""

    n: int = 0
    top1: float = 0.0
    top5: float = 0.0
    loss_sum: float = 0.0
    sdc1: float = 0.0
    sdc1_of: int = 0
    sdc5: float = 0.0
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
            "sdc1": self.sdc1 / self.sdc1_of if self.sdc1_of else math.nan,
            "sdc5": self.sdc5 / self.sdc5_of if self.sdc5_of else math.nan,
            "due": self.due / self.n if self.n else math.nan,
        }

    def metrics(self) -> dict[str, float]:
        """``{"n_images", "top1", "top5", "loss"}``: accuracies as fractions, loss = mean CE."""
        if self.n == 0:
            return {"n_images": 0, "top1": math.nan, "top5": math.nan, "loss": math.nan}
        return {
            "n_images": self.n,
            "top1": self.top1 / self.n,
            "top5": self.top5 / self.n,
            "loss": self.loss_sum / self.n,
        }


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
    true = logits.gather(1, labels.view(-1, 1))
    greater = (logits > true).sum(1).double()
    equal = (logits == true).sum(1).double()
    credit = ((k - greater) / equal.clamp_min(1)).clamp(0, 1)
    return torch.where(torch.isnan(true.squeeze(1)), torch.zeros_like(credit), credit)


def reference_masks(reference: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Which images the clean network gets right: (true class is its unique top-1, true class
    is in its top 5 with full credit), each bool (B,), from the clean logits (B, C)."""
    reference = reference.float()
    k5 = min(5, reference.shape[1])
    return topk_credit(reference, labels, 1) == 1, topk_credit(reference, labels, k5) == 1


def resilience_sums(
    logits: Tensor, labels: Tensor, clean_top1: Tensor, clean_top5: Tensor,
    credit1: Tensor | None = None, credit5: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Resilience numerators of one batch as 0-dim float64 tensors (no host sync).

    - ``sdc1``: over the images the clean network classifies correctly (``clean_top1``),
      the expected number whose top-1 prediction changes, i.e. ``1 - top-1 credit``
      (tie-aware, :func:`topk_credit`) summed over those images with finite logits;
    - ``sdc5``: over the images whose true class is in the clean top 5 (``clean_top5``),
      ``1 - top-5 credit`` summed likewise (the true class leaves the top 5);
    - ``due``: images with a NaN or Inf logit (any class). Such images count as DUE, never
      as SDC.

    Definitions (chosen, after the usage of TensorFI2 and PyTorchALFI): SDC is a silent
    misclassification of an image the fault-free ("golden") network classifies correctly;
    DUE is a detected unrecoverable error, here a non-finite output (ALFI's NaN/Inf monitor).
    The denominators are ``clean_top1.sum()`` and ``clean_top5.sum()``.

    Args:
        logits: (B, C) faulty logits; labels: (B,); clean_top1, clean_top5: bool (B,) from
            :func:`reference_masks`; credit1, credit5: the top-1 / top-5 credit of ``logits``
            (:func:`topk_credit`) when already computed.
    """
    logits = logits.float()
    finite = torch.isfinite(logits).all(1)
    k5 = min(5, logits.shape[1])
    miss1 = 1 - (topk_credit(logits, labels, 1) if credit1 is None else credit1)
    miss5 = 1 - (topk_credit(logits, labels, k5) if credit5 is None else credit5)
    sdc1 = (miss1 * (clean_top1 & finite)).sum()
    sdc5 = (miss5 * (clean_top5 & finite)).sum()
    return sdc1, sdc5, (~finite).sum().double()


def count_logits(logits: Tensor, labels: Tensor, reference: Tensor | None = None) -> Counts:
    """:class:`Counts` of one batch of logits (B, C) against labels (B,); with the clean
    network's logits ``reference`` (B, C) also the SDC sums (:func:`resilience_sums`).
    ``due`` is counted either way."""
    logits = logits.float()
    loss = F.cross_entropy(logits, labels, reduction="sum").item()
    c1, c5 = topk_credit(logits, labels, 1), topk_credit(logits, labels, min(5, logits.shape[1]))
    c = Counts(n=int(labels.numel()), top1=c1.sum().item(), top5=c5.sum().item(), loss_sum=loss)
    if reference is None:
        c.due = int((~torch.isfinite(logits).all(1)).sum())
        return c
    ok1, ok5 = reference_masks(reference, labels)
    s1, s5, due = resilience_sums(logits, labels, ok1, ok5, c1, c5)
    c.sdc1, c.sdc5, c.due = s1.item(), s5.item(), int(due.item())
    c.sdc1_of, c.sdc5_of = int(ok1.sum()), int(ok5.sum())
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
    adversarial examples).

    ``overrides`` maps full parameter names (``features.0.weight``) to replacement tensors;
    the model itself is never modified (``torch.func.functional_call``). Images and labels
    are moved batch by batch to the model's device. The SDC sums are against the model
    itself (without overrides; an extra forward pass per batch when there are overrides).

    Raises:
        ValueError: the model is in training mode (BatchNorm/Dropout would change the result).
    """
    if model.training:
        raise ValueError("evaluate() needs the model in eval() mode")
    device = next(model.parameters()).device
    total = Counts()
    for start in range(0, len(labels), batch_size):
        x = images[start : start + batch_size].to(device, non_blocking=True)
        x = preprocess(x) if preprocess is not None else x
        y = labels[start : start + batch_size].to(device, non_blocking=True)
        if overrides:
            logits = functional_call(model, dict(overrides), (x,), strict=False)
            reference = model(x)
        else:
            logits = reference = model(x)
        total += count_logits(logits, y, reference)
    return total
