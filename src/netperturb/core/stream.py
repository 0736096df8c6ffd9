"""Evaluation data as a stream of batches: what every engine and :func:`netperturb.core.evaluate.evaluate_stream` iterate.

An :class:`ImageStream` yields :class:`Batch` es of model inputs and labels on a device, in
the same order on every pass (an engine makes several passes: the clean reference, then one
per group of perturbed replicas when the clean activations do not fit in memory). Nothing
requires the whole evaluation set to fit in memory; two implementations:

- :class:`TensorStream`: images and labels already in memory (the workflow's uint8 shards,
  or ``(x, y)`` tensors of a notebook), sliced into batches of ``batch_size``; uint8 images
  are turned into model inputs batch by batch by ``preprocess`` on the device
  (:class:`netperturb.core.preprocess.Preprocess`), float images are taken as model inputs.
- :class:`LoaderStream`: a ``torch.utils.data.DataLoader`` (or a ``Dataset``, wrapped in a
  DataLoader without shuffling), read batch by batch; its batches are what the DataLoader
  yields (float images already transformed for the model, or uint8 images with a
  ``preprocess``).

:func:`as_stream` turns any of these (DataLoader, Dataset, ``(x, y)`` tensors, a stream)
into a stream. Each image has an index: its position in the stream (0-based, in iteration
order), which the transient activation faults use for their per-image draws.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

__all__ = ["Batch", "ImageStream", "TensorStream", "LoaderStream", "as_stream", "n_batches", "DataSpec"]

#: What a preprocess is: uint8 images (B, C, H, W) on the device -> model input (float).
PreprocessFn = Callable[[Tensor], Tensor]


@dataclass
class Batch:
    """One batch of an :class:`ImageStream`.

    Attributes:
        x: model input (B, ...) float, on the device (after ``preprocess``).
        y: labels (B,) int64, on the device.
        start: index of ``x[0]`` in the stream (0-based).
    """

    x: Tensor
    y: Tensor
    start: int


class ImageStream(ABC):
    """Evaluation images and labels, read in batches; every pass gives the same batches in
    the same order.

    Attributes:
        batch_size: images per batch (the last batch may be smaller).
    """

    batch_size: int

    @property
    @abstractmethod
    def n(self) -> int | None:
        """Number of images, or None when the source cannot tell before it is read."""

    @abstractmethod
    def batches(self, device: torch.device | str) -> Iterator[Batch]:
        """One pass over the data: :class:`Batch` es with inputs and labels on ``device``."""

    def head(self, device: torch.device | str, k: int = 2) -> Tensor | None:
        """The model inputs of the first ``k`` images (fewer if the stream is shorter) on
        ``device``; None for an empty stream."""
        for b in self.batches(device):
            return b.x[:k]
        return None

    def on_device(self, device: torch.device | str) -> "ImageStream":
        """A stream that reads faster on ``device`` (e.g. in-memory images moved to the GPU
        once); the same batches. The default is the stream itself."""
        return self

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data cheaply, for resume (:class:`netperturb.core.resume.CellStore`):
        the kind, the number of images and batch size, and sha256 of the first batch's inputs
        and labels (not of every image: a changed image after the first batch goes unnoticed)."""
        first = next(iter(self.batches("cpu")), None)
        h = hashlib.sha256()
        if first is not None:
            h.update(first.x.detach().contiguous().cpu().numpy().tobytes())
            h.update(first.y.detach().contiguous().cpu().numpy().tobytes())
        return {"kind": type(self).__name__, "n": self.n, "batch_size": self.batch_size,
                "first_batch_sha256": h.hexdigest()}  # fmt: skip


def _check_labels(labels: Tensor, what: str) -> Tensor:
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{what}: labels must be integer class indices, got dtype {labels.dtype}")
    return labels if labels.dtype == torch.int64 else labels.long()


class TensorStream(ImageStream):
    """Images and labels in memory, in batches of ``batch_size``.

    Args:
        images: (N, C, H, W) uint8 (then ``preprocess`` is required) or float model inputs.
        labels: (N,) integer class indices.
        preprocess: uint8 -> model input on the device (e.g. a
            :class:`~netperturb.core.preprocess.Preprocess`); applied to float images too
            when given.
        batch_size: images per batch, >= 1.

    Raises:
        ValueError: N differs between images and labels, uint8 images without
            ``preprocess``, float labels, batch_size < 1.
    """

    def __init__(self, images: Tensor, labels: Tensor, preprocess: PreprocessFn | None = None, batch_size: int = 256):
        images, labels = torch.as_tensor(images), torch.as_tensor(labels)
        if images.ndim == 0 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"(x, y): x must be (N, ...) and y (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
        if images.dtype == torch.uint8 and preprocess is None:
            raise ValueError("(x, y): uint8 images need preprocess= (uint8 -> model input, e.g. a "
                             "netperturb.core.preprocess.Preprocess); or pass float images already transformed")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images = images
        self.labels = _check_labels(labels, "(x, y)")
        self.preprocess = preprocess
        self.batch_size = int(batch_size)

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    def _inputs(self, start: int, end: int, device) -> Tensor:
        x = self.images[start:end].to(device, non_blocking=True)
        return self.preprocess(x) if self.preprocess is not None else x

    def batches(self, device) -> Iterator[Batch]:
        for start in range(0, self.n, self.batch_size):
            end = min(start + self.batch_size, self.n)
            yield Batch(self._inputs(start, end, device), self.labels[start:end].to(device, non_blocking=True), start)

    def head(self, device, k: int = 2) -> Tensor | None:
        return self._inputs(0, min(self.n, k), device) if self.n else None

    def on_device(self, device) -> "TensorStream":
        """On a GPU: the images moved there once when they take less than 30% of the free
        memory, else pinned host memory (faster copies); on the CPU the stream itself."""
        device = torch.device(device)
        if device.type != "cuda" or self.images.device.type == "cuda":
            return self
        if self.images.numel() * self.images.element_size() < 0.3 * torch.cuda.mem_get_info(device)[0]:
            images = self.images.to(device)
        else:
            images = self.images.pin_memory()
        return TensorStream(images, self.labels, self.preprocess, self.batch_size)


def _sequential(loader) -> bool:
    from torch.utils.data import RandomSampler

    sampler = loader.batch_sampler.sampler if loader.batch_sampler is not None else loader.sampler
    return not isinstance(sampler, RandomSampler) and not isinstance(loader.sampler, RandomSampler)


class LoaderStream(ImageStream):
    """A ``torch.utils.data.DataLoader`` read batch by batch (never held in memory whole).

    Each item the loader yields is ``(x, y)`` (a tuple or list; further entries are ignored)
    with x (B, ...) uint8 (then ``preprocess`` is required) or float model inputs, y (B,)
    integer class indices.

    Args:
        loader: iterated once per pass; must give the same images in the same order each
            time (no ``shuffle=True``, no random augmentation).
        preprocess: uint8 -> model input on the device; applied to float batches too when given.

    Raises:
        ValueError: a loader that shuffles (``shuffle=True``): the clean reference and the
            perturbed passes would see different images.
    """

    def __init__(self, loader, preprocess: PreprocessFn | None = None):
        if not _sequential(loader):
            raise ValueError("DataLoader: shuffle=True (a RandomSampler) gives the images in another order on every "
                             "pass, so the clean and the perturbed network would see different images; "
                             "make the DataLoader with shuffle=False")  # fmt: skip
        self.loader = loader
        self.preprocess = preprocess
        self._batch_size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None)

    @property
    def batch_size(self) -> int:  # type: ignore[override]
        """The DataLoader's batch size; for one that yields whole batches itself
        (``batch_size=None``), the size of its first batch."""
        if self._batch_size is None:
            first = next(iter(self.loader), None)
            self._batch_size = int(torch.as_tensor(first[1]).shape[0]) if isinstance(first, (tuple, list)) and len(first) > 1 else 1
        return int(self._batch_size)

    @property
    def n(self) -> int | None:
        if self.loader.batch_sampler is None:  # the loader yields whole batches: their sizes are unknown
            return None
        try:
            n = len(self.loader.sampler)
        except TypeError:  # an IterableDataset without __len__
            return None
        if getattr(self.loader, "drop_last", False):
            n = (n // self.batch_size) * self.batch_size
        return n

    def batches(self, device) -> Iterator[Batch]:
        start = 0
        for i, item in enumerate(self.loader):
            if isinstance(item, dict) or not isinstance(item, (tuple, list)) or len(item) < 2:
                raise ValueError(f"DataLoader: batch {i} is a {type(item).__name__}; each batch must be (images, labels)")
            x, y = torch.as_tensor(item[0]), _check_labels(torch.as_tensor(item[1]), f"DataLoader batch {i}")
            if x.shape[:1] != y.shape or y.ndim != 1:
                raise ValueError(f"DataLoader: batch {i} has images {tuple(x.shape)} and labels {tuple(y.shape)}; "
                                 "expected (B, ...) and (B,)")  # fmt: skip
            if x.dtype == torch.uint8 and self.preprocess is None:
                raise ValueError("DataLoader: uint8 images need preprocess= (uint8 -> model input); or add the "
                                 "model's transforms (ToTensor, Normalize) to the dataset")  # fmt: skip
            x = x.to(device, non_blocking=True)
            x = self.preprocess(x) if self.preprocess is not None else x
            yield Batch(x, y.to(device, non_blocking=True), start)
            start += int(y.shape[0])


#: What :func:`as_stream` accepts.
DataSpec = Any


def as_stream(data: DataSpec, *, preprocess: PreprocessFn | None = None, batch_size: int = 256) -> ImageStream:
    """``data`` as an :class:`ImageStream`.

    Args:
        data: an :class:`ImageStream` (returned as it is; ``preprocess`` and ``batch_size``
            are then not used), a ``torch.utils.data.DataLoader``, a map-style ``Dataset`` of
            ``(image, label)`` items (read in batches of ``batch_size``, in index order), or a
            pair ``(x, y)`` of tensors or arrays (x (N, C, H, W), y (N,)).
        preprocess: uint8 -> model input on the device; required for uint8 images.
        batch_size: images per batch for a Dataset or tensors (a DataLoader keeps its own).

    Raises:
        TypeError: ``data`` is none of these (the message names its type).
        ValueError: see :class:`TensorStream` and :class:`LoaderStream`.
    """
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if isinstance(data, ImageStream):
        return data
    if isinstance(data, DataLoader):
        return LoaderStream(data, preprocess)
    if isinstance(data, (Dataset, IterableDataset)):
        return LoaderStream(DataLoader(data, batch_size=int(batch_size), shuffle=False), preprocess)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return TensorStream(data[0], data[1], preprocess, batch_size)
    raise TypeError(f"data: a {type(data).__name__} is not evaluation data; pass a torch DataLoader, a Dataset of "
                    "(image, label) items, or a pair (x, y) of tensors")  # fmt: skip


def n_batches(stream: ImageStream) -> int | None:
    """How many batches a pass has (None when the stream's length is unknown)."""
    n = stream.n
    return None if n is None else math.ceil(n / stream.batch_size)
