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

__all__ = ["Counts", "topk_credit", "count_logits", "evaluate", "resolve_device"]


@dataclass
class Counts:
    """Sums over images: ``n`` images, top-1 / top-5 credit, summed cross-entropy (nats)."""

    n: int = 0
    top1: float = 0.0
    top5: float = 0.0
    loss_sum: float = 0.0

    def __iadd__(self, other: "Counts") -> "Counts":
        self.n += other.n
        self.top1 += other.top1
        self.top5 += other.top5
        self.loss_sum += other.loss_sum
        return self

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


def count_logits(logits: Tensor, labels: Tensor) -> Counts:
    """:class:`Counts` of one batch of logits (B, C) against labels (B,)."""
    logits = logits.float()
    loss = F.cross_entropy(logits, labels, reduction="sum").item()
    return Counts(
        n=int(labels.numel()),
        top1=topk_credit(logits, labels, 1).sum().item(),
        top5=topk_credit(logits, labels, min(5, logits.shape[1])).sum().item(),
        loss_sum=loss,
    )


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
    are moved batch by batch to the model's device.

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
        else:
            logits = model(x)
        total += count_logits(logits, y)
    return total
