"""Evaluate a model on any data: :func:`evaluate` and its result, :class:`Metrics`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from netperturb.core.evaluate import Counts, count_logits, reference_masks
from netperturb.core.stream import DataSpec, as_stream

__all__ = ["Metrics", "evaluate", "model_device", "require_eval"]


@dataclass(frozen=True, repr=False)
class Metrics:
    """What :func:`evaluate` measured.

    Accuracies are fractions in [0, 1], tie-aware (an image whose true-class logit ties with
    others at the top-k boundary gets the expected credit under random tie-breaking; exact
    sums, :mod:`netperturb.core.evaluate`).

    Attributes:
        n_images: images evaluated.
        top1, top5: top-1 / top-5 accuracy.
        loss: mean cross-entropy (nats).
        sdc1: silent data corruption, top-1: among the images the reference network
            classifies correctly (true class its unique top-1), the share whose top-1
            prediction changes (tie-aware); NaN without a reference.
        sdc5: likewise for the images whose true class is in the reference's top 5: the share
            for which it leaves the top 5; NaN without a reference.
        due: detected unrecoverable errors: share of images with a NaN or Inf logit.
        counts: the exact sums behind these numbers (:class:`netperturb.core.evaluate.Counts`).
        top1_correct, top5_correct: bool (n_images,) on the CPU: per image (in the data's
            order) whether *this* network has the true class as its unique top-1 / in its top 5.
            They make this result usable as the ``reference`` of a later :func:`evaluate` on
            the same data (the SDC definitions above).

    SDC / DUE: the definitions of TensorFI2 and PyTorchALFI (an SDC is a silent
    misclassification of an image the fault-free "golden" network gets right; a DUE a
    non-finite output), as in :func:`netperturb.core.evaluate.resilience_parts`.
    """

    n_images: int
    top1: float
    top5: float
    loss: float
    sdc1: float
    sdc5: float
    due: float
    counts: Counts
    top1_correct: Tensor = field(compare=False)
    top5_correct: Tensor = field(compare=False)

    def as_dict(self) -> dict[str, float]:
        """``{"n_images", "top1", "top5", "loss", "sdc1", "sdc5", "due"}``."""
        return {k: getattr(self, k) for k in ("n_images", "top1", "top5", "loss", "sdc1", "sdc5", "due")}

    def __repr__(self) -> str:
        parts = [f"n_images={self.n_images}"]
        parts += [f"{k}={getattr(self, k):.4g}" for k in ("top1", "top5", "loss", "sdc1", "sdc5", "due")]
        return f"Metrics({', '.join(parts)})"


def model_device(model: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """The device ``model``'s parameters are on (CPU for a model without parameters).

    Raises:
        ValueError: ``device`` is given and is not that device (the model is never moved
            here: move it with ``model.to(device)``).
    """
    p = next(iter(model.parameters()), None)
    have = p.device if p is not None else torch.device("cpu")
    if device is not None:
        want = torch.device(device)
        if want.type != have.type or (want.index is not None and want.index != have.index):
            raise ValueError(f"device={str(device)!r}, but the model is on {have}; move it first with model.to({str(device)!r})")
    return have


def require_eval(model: nn.Module, what: str) -> None:
    """Raises ValueError (naming ``what`` and the remedy) when ``model`` is in training mode."""
    if model.training:
        raise ValueError(f"{what}: the model is in training mode (BatchNorm and Dropout would change the numbers); "
                         "call model.eval() first")  # fmt: skip


def _reference_masks(reference: Any, model: nn.Module) -> Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor] | None]:
    """``masks(x, y, start)``: the reference network's (top-1 right, top-5 right) masks of a batch."""
    from netperturb.api.context import perturbed_now

    if reference is None:
        return lambda x, y, start: None
    if isinstance(reference, nn.Module):
        if reference is model and perturbed_now(model):
            raise ValueError("reference: the model itself is perturbed inside `perturbed(...)`, so it is no fault-free "
                             "reference; evaluate it before the `with` block and pass that result as reference=")  # fmt: skip
        require_eval(reference, "reference")

        def from_model(x, y, start):
            return reference_masks(reference(x), y)

        return from_model
    if isinstance(reference, Metrics):
        r1, r5 = reference.top1_correct, reference.top5_correct
    elif isinstance(reference, Tensor):
        if reference.ndim != 2:
            raise ValueError(f"reference: logits must be (N, classes), got shape {tuple(reference.shape)}")
        r1 = r5 = None
    else:
        raise TypeError(f"reference: a {type(reference).__name__}; pass a Metrics (a clean evaluate() result), "
                        "a clean nn.Module, or its logits (N, classes)")  # fmt: skip
    n_ref = int(reference.shape[0]) if isinstance(reference, Tensor) else reference.n_images

    def stored(x, y, start):
        end = start + int(y.shape[0])
        if end > n_ref:
            raise ValueError(f"reference: it covers {n_ref} images, the data has more; evaluate the reference on the same data")
        if r1 is None:
            return reference_masks(reference[start:end].to(y.device), y)
        return r1[start:end].to(y.device), r5[start:end].to(y.device)

    stored.n_images = n_ref  # type: ignore[attr-defined]
    return stored


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DataSpec,
    *,
    reference: "Metrics | nn.Module | Tensor | None" = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> Metrics:
    """Top-1 / top-5 accuracy, loss and, against a fault-free ``reference``, SDC and DUE of
    ``model`` on ``data``, read batch by batch (never held in memory whole).

    Args:
        model: any classifier ``nn.Module`` in ``eval()`` mode, input (B, C, H, W) ->
            logits (B, classes). Inside :func:`netperturb.perturbed` it is the perturbed network.
        data: a ``torch.utils.data.DataLoader`` (no shuffling), a ``Dataset`` of
            ``(image, label)`` items, or ``(x, y)`` tensors: x (N, C, H, W) float images
            already transformed for the model, or uint8 with ``preprocess``; y (N,) class
            indices (:func:`netperturb.core.stream.as_stream`).
        reference: the fault-free network the SDC counts compare with: a :class:`Metrics`
            of an earlier :func:`evaluate` of it on the same data (cheapest), the clean
            ``nn.Module`` (one more forward pass per batch), or its logits (N, classes) on
            the same data in the same order. None: ``sdc1`` / ``sdc5`` are NaN.
        preprocess: uint8 images -> model input, on the device (e.g.
            :class:`netperturb.core.preprocess.Preprocess`).
        batch_size: images per forward pass for a Dataset or tensors (a DataLoader keeps its own).
        device: where the model is (checked; the model is never moved); None: its device.

    Returns:
        :class:`Metrics`.

    Raises:
        ValueError: the model (or reference model) is in training mode; the reference is the
            model itself while it is perturbed; a reference over another number of images;
            uint8 images without ``preprocess``; a shuffling DataLoader; ``device`` is not the
            model's.
        TypeError: ``data`` or ``reference`` of an unsupported kind.
    """
    require_eval(model, "evaluate")
    dev = model_device(model, device)
    stream = as_stream(data, preprocess=preprocess, batch_size=batch_size)
    masks_of = _reference_masks(reference, model)
    total = Counts()
    own1: list[Tensor] = []
    own5: list[Tensor] = []
    for b in stream.batches(dev):
        logits = model(b.x)
        m1, m5 = reference_masks(logits, b.y)
        own1.append(m1.cpu())
        own5.append(m5.cpu())
        total += count_logits(logits, b.y, masks=masks_of(b.x, b.y, b.start))
    n_ref = getattr(masks_of, "n_images", None)
    if n_ref is not None and n_ref != total.n:
        raise ValueError(f"reference: it covers {n_ref} images, the data has {total.n}; evaluate the reference on the same data")
    metrics, res = total.metrics(), total.resilience()
    if total.n == 0:
        res["due"] = math.nan
    return Metrics(
        n_images=total.n, top1=metrics["top1"], top5=metrics["top5"], loss=metrics["loss"], sdc1=res["sdc1"],
        sdc5=res["sdc5"], due=res["due"], counts=total,
        top1_correct=torch.cat(own1) if own1 else torch.zeros(0, dtype=torch.bool),
        top5_correct=torch.cat(own5) if own5 else torch.zeros(0, dtype=torch.bool),
    )  # fmt: skip
