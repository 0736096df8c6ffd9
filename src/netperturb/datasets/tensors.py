"""Images and labels as tensors in one file (``.pt`` or ``.npz``) -> uint8 shards.

The file holds, by name (a ``torch.save``-d dict read with ``weights_only=True``, or a NumPy
``.npz``):

- ``images`` and ``labels``: one split, ``test``, for evaluation only; or
- ``train_images``, ``train_labels``, ``test_images``, ``test_labels``: both splits;
- optionally ``classes``: the class names (a list of strings in a ``.pt``; an array of
  strings in a ``.npz``).

Images are (N, C, H, W) or (N, H, W) (one channel), uint8 (values 0..``value_range[1]``,
default 255) or floating point (values in [0, ``value_range[1]``], default [0, 1]); labels are
integers in [0, number of classes). Floating-point images are stored as uint8
``round(x / max * 255)`` (exact for images that came from 8-bit files; the largest rounding
error is recorded in the manifest), so their stored range is [0, 255]. ``transform.resize`` /
``.crop`` resize and centre-crop (bilinear, antialias) before storing; ``transform.mean`` /
``.std`` are recorded as the data's normalisation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from netperturb.core.preprocess import Preprocess
from netperturb.datasets.folder import channel_stats, decode_transform
from netperturb.datasets.shards import write_shards

__all__ = ["TensorFileError", "read_tensor_file", "tensor_file_layout", "prepare_tensor_file"]


class TensorFileError(ValueError):
    """The tensor file does not hold images and labels as described (names the file and the entry)."""


def _load(path: Path, key: str) -> Mapping[str, Any]:
    if not path.is_file():
        raise TensorFileError(f"{key}: {path} does not exist")
    try:
        if path.suffix == ".npz":
            return dict(np.load(path, allow_pickle=False))
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise TensorFileError(f"{key}: {path} is not readable as {'.npz' if path.suffix == '.npz' else 'a torch.save file'} "
                              f"({type(e).__name__}: {str(e)[:200]})") from None  # fmt: skip
    if not isinstance(obj, Mapping):
        raise TensorFileError(f"{key}: {path} holds a {type(obj).__name__}; expected a dict with images and labels")
    return obj


def _split_names(obj: Mapping[str, Any], path: Path, key: str) -> dict[str, tuple[str, str]]:
    if "images" in obj and "labels" in obj:
        return {"test": ("images", "labels")}
    names = {s: (f"{s}_images", f"{s}_labels") for s in ("train", "test")}
    if all(n in obj for pair in names.values() for n in pair):
        return names
    raise TensorFileError(f"{key}: {path} has entries {sorted(obj)[:10]}; expected images and labels, or train_images, "
                          "train_labels, test_images and test_labels")  # fmt: skip


def _as_tensor(v) -> Tensor:
    return v if isinstance(v, Tensor) else torch.from_numpy(np.asarray(v))


def read_tensor_file(path: str | os.PathLike, key: str = "dataset.path") -> dict[str, Any]:
    """The splits (name -> (images, labels) as stored), class names (or None) of a tensor file.

    Raises:
        TensorFileError: not readable, missing entries, shapes or dtypes that are not images and
            integer labels, counts that differ (the message names ``key``, the file and the entry).
    """
    path = Path(path)
    obj = _load(path, key)
    splits = {}
    for split, (xi, yi) in _split_names(obj, path, key).items():
        x, y = _as_tensor(obj[xi]), _as_tensor(obj[yi])
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise TensorFileError(f"{key}: {path}: {xi} has shape {tuple(x.shape)}; expected (N, C, H, W) with C = 1 or 3, "
                                  "or (N, H, W)")  # fmt: skip
        if not (x.dtype == torch.uint8 or x.is_floating_point()):
            raise TensorFileError(f"{key}: {path}: {xi} is {x.dtype}; expected uint8 or floating-point images")
        if y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool or y.shape[0] != x.shape[0]:
            raise TensorFileError(f"{key}: {path}: {yi} is {y.dtype} {tuple(y.shape)}; expected {x.shape[0]} integer labels")
        splits[split] = (x, y.to(torch.int64))
    classes = obj.get("classes")
    if classes is not None:
        classes = [str(c) for c in (classes.tolist() if hasattr(classes, "tolist") else classes)]
    return {"splits": splits, "classes": classes}


def tensor_file_layout(path: str | os.PathLike, key: str = "dataset.path") -> dict[str, Any]:
    """Splits, class count and image shape (C, H, W) of a tensor file, for planning.

    Raises:
        TensorFileError: see :func:`read_tensor_file`; a negative label.
    """
    data = read_tensor_file(path, key)
    labels = torch.cat([y for _, y in data["splits"].values()])
    if labels.numel() and labels.min() < 0:
        raise TensorFileError(f"{key}: {path}: a label is negative ({int(labels.min())})")
    n = len(data["classes"]) if data["classes"] else int(labels.max()) + 1 if labels.numel() else 0
    x = next(iter(data["splits"].values()))[0]
    return {"splits": sorted(data["splits"]), "num_classes": n, "shape": tuple(int(v) for v in x.shape[1:]),
            "classes": data["classes"]}  # fmt: skip


def prepare_tensor_file(out_dir: str | os.PathLike, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Store a tensor file's images and labels as shards in ``out_dir``.

    Args:
        spec: ``dataset`` of the config: ``path``, ``name``, ``value_range``, ``transform``,
            ``num_classes``, ``shard_size``.

    Raises:
        TensorFileError: see :func:`read_tensor_file`; values outside the value range; a label
            outside [0, number of classes).
    """
    path = Path(spec["path"])
    data = read_tensor_file(path)
    layout = tensor_file_layout(path)
    num_classes = int(spec.get("num_classes") or layout["num_classes"])
    classes = data["classes"] or [str(i) for i in range(num_classes)]
    transform = decode_transform(spec.get("transform"))
    stored: dict[str, tuple[Tensor, Tensor]] = {}
    worst = 0.0
    value_max = None
    for split, (x, y) in data["splits"].items():
        hi = float(spec["value_range"][1]) if spec.get("value_range") else (255.0 if x.dtype == torch.uint8 else 1.0)
        lo_seen, hi_seen = float(x.min()), float(x.max())
        if lo_seen < 0 or hi_seen > hi:
            raise TensorFileError(
                f"dataset.path: {path}: {split} images hold values in [{lo_seen:g}, {hi_seen:g}], outside the value range "
                f"[0, {hi:g}]. Remedy: give images on a [0, max] scale (not normalised) and say the max with "
                "dataset.value_range: [0, max]."
            )
        if x.is_floating_point():
            q = torch.round(x.to(torch.float64) / hi * 255)
            worst = max(worst, float((q / 255 * hi - x.to(torch.float64)).abs().max()) if x.numel() else 0.0)
            x, hi = q.to(torch.uint8), 255.0
        value_max = hi if value_max is None else value_max
        if hi != value_max:
            raise TensorFileError(f"dataset.path: {path}: the splits are stored on different scales ({value_max:g}, {hi:g})")
        if y.numel() and int(y.max()) >= num_classes:
            raise TensorFileError(f"dataset.path: {path}: {split} label {int(y.max())} is outside [0, {num_classes})")
        stored[split] = (_transformed(x.contiguous(), transform), y.contiguous())
    t = spec.get("transform") or {}
    given = {"mean": list(t["mean"]), "std": list(t["std"])} if t.get("mean") is not None else None
    if given:
        pre = Preprocess(scale=1 / value_max, mean=tuple(given["mean"]), std=tuple(given["std"]), size=None)
    elif "train" in stored:
        pre = channel_stats(stored["train"][0], 1 / value_max)
    else:
        pre = Preprocess(scale=1 / value_max, mean=(0.0,), std=(1.0,), size=None)
    return write_shards(
        out_dir, stored, dataset=spec["name"], num_classes=num_classes, classes=classes, preprocess=pre,
        shard_size=int(spec.get("shard_size", 10_000)),
        source={"kind": "tensors", "path": str(path), "transform": dict(t), "quantisation_error": worst},
        value_range=[0, value_max], normalisation=given,
    )  # fmt: skip


def _transformed(x: Tensor, transform: Mapping[str, Any]) -> Tensor:
    """uint8 (N, C, H, W) resized / centre-cropped as ``transform`` says (torchvision's tensor
    ``resize`` and ``center_crop``, bilinear, antialias), still uint8."""
    import torchvision.transforms.functional as TF

    if transform.get("resize_size") is not None:
        x = TF.resize(x, list(transform["resize_size"]), antialias=True)
    if transform.get("crop_size") is not None:
        x = TF.center_crop(x, list(transform["crop_size"]))
    return x.contiguous()
