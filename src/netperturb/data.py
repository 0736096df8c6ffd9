"""Decoded datasets as uint8 shards, and the on-device preprocessing that goes with them.

DESIGN.md, "Performance design" 1: images are decoded once into uint8 tensors
(N x C x H x W) with int64 labels, written as shards with a manifest; everything a model
needs on top of that (scaling to [0, 1], a resize, mean/std normalisation) is done on the
device by :class:`Preprocess`.

Shard folder layout (``format: netperturb-shards/1``)::

    <dir>/manifest.json
    <dir>/<split>-00000.pt   {"images": uint8 (n, C, H, W), "labels": int64 (n,)}
    <dir>/<split>-00001.pt   ...

The manifest records, per split, the count and every shard's file name, count and sha256,
plus ``num_classes``, ``classes``, ``preprocess`` (the :class:`Preprocess` that models
trained on this data should use), ``skipped`` (files that could not be read, with the
reason) and free-form ``source`` information.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .io import sha256_file, torch_save, write_json

__all__ = [
    "Preprocess",
    "ShardError",
    "write_shards",
    "read_manifest",
    "load_split",
    "prepare_digits",
    "prepare_mnist",
    "SHARD_FORMAT",
    "DATASETS",
    "dataset_info",
]

SHARD_FORMAT = "netperturb-shards/1"

#: What the workflow must know about a dataset before its shards exist (to plan jobs).
DATASETS: dict[str, dict[str, Any]] = {
    "digits": {"num_classes": 10, "in_channels": 1, "eval_split": "test"},
    "mnist": {"num_classes": 10, "in_channels": 1, "eval_split": "test"},
    # ILSVRC 2012 validation set, decoded per weights' transform (netperturb.imagenet)
    "imagenet": {"num_classes": 1000, "in_channels": 3, "eval_split": "val"},
}


def dataset_info(name: str) -> dict[str, Any]:
    """``{"num_classes", "in_channels", "eval_split"}`` of a known dataset.

    Raises:
        ValueError: unknown dataset (lists the known ones).
    """
    try:
        return dict(DATASETS[name])
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


class ShardError(RuntimeError):
    """A shard folder is missing, incomplete or does not match its manifest."""


@dataclass(frozen=True)
class Preprocess:
    """uint8 images -> normalised float input, on the images' device.

    ``x = ((resize(u8 * scale)) - mean) / std`` per channel.

    Attributes:
        scale: multiplies the uint8 values (1/255 for 8-bit images, 1/16 for the 0..16
            digits).
        mean, std: per-channel normalisation (length C, or 1 to broadcast).
        size: if set, bilinearly resize to ``size x size`` (align_corners=False,
            antialias off) before normalising; ``None`` keeps the stored size.
    """

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int | None = None

    def __call__(self, images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Args: images uint8 (B, C, H, W). Returns dtype (B, C, size, size) on the same device."""
        x = images.to(dtype) * self.scale
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mean = torch.tensor(self.mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        return cls(
            scale=float(d["scale"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            size=None if d.get("size") is None else int(d["size"]),
        )


def write_shards(
    out_dir: str | os.PathLike,
    splits: dict[str, tuple[Tensor, Tensor]],
    *,
    dataset: str,
    num_classes: int,
    classes: Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
    shard_size: int = 10_000,
    skipped: Sequence[dict[str, str]] = (),
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``splits`` (name -> (images uint8 (N, C, H, W), labels int64 (N,))) as shards.

    Every file is written atomically; the manifest last, so a folder with a manifest is
    complete. Returns the manifest dict.

    Raises:
        ValueError: wrong dtype/shape, mismatched counts, or a label outside
            [0, num_classes).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": SHARD_FORMAT,
        "dataset": dataset,
        "num_classes": int(num_classes),
        "classes": list(classes) if classes is not None else [str(i) for i in range(num_classes)],
        "preprocess": preprocess.to_dict() if preprocess is not None else None,
        "shard_size": int(shard_size),
        "splits": {},
        "skipped": list(skipped),
        "source": source or {},
    }
    for split, (images, labels) in splits.items():
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"split {split!r}: images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
            raise ValueError(f"split {split!r}: labels must be int64 ({images.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"split {split!r}: labels outside [0, {num_classes})")
        entries = []
        for i, start in enumerate(range(0, max(len(labels), 1), shard_size)):
            name = f"{split}-{i:05d}.pt"
            chunk = {
                "images": images[start : start + shard_size].contiguous().clone(),
                "labels": labels[start : start + shard_size].contiguous().clone(),
            }
            torch_save(chunk, out / name)
            entries.append({"file": name, "count": int(chunk["labels"].numel()), "sha256": sha256_file(out / name)})
        manifest["splits"][split] = {
            "count": int(labels.numel()),
            "shape": list(images.shape[1:]),
            "shards": entries,
        }
    write_json(manifest, out / "manifest.json")
    return manifest


def read_manifest(shard_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``<shard_dir>/manifest.json``.

    Raises:
        ShardError: the manifest is missing, unreadable or of another format.
    """
    path = Path(shard_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path}: no shard manifest (run the prepare rule first)") from None
    except json.JSONDecodeError as e:
        raise ShardError(f"{path}: unreadable manifest ({e})") from None
    if manifest.get("format") != SHARD_FORMAT:
        raise ShardError(f"{path}: format {manifest.get('format')!r}, expected {SHARD_FORMAT!r}")
    return manifest


def load_split(
    shard_dir: str | os.PathLike,
    split: str,
    *,
    limit: int | None = None,
    verify: bool = False,
) -> tuple[Tensor, Tensor]:
    """Load one split into memory: (images uint8 (N, C, H, W), labels int64 (N,)).

    Args:
        limit: keep only the first ``limit`` images (shards are read lazily up to it).
        verify: check each shard's sha256 against the manifest first.

    Raises:
        ShardError: unknown split, missing shard, checksum or count mismatch (naming the file).
    """
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir)
    if split not in manifest["splits"]:
        raise ShardError(f"{shard_dir}: no split {split!r} (has {sorted(manifest['splits'])})")
    images, labels, have = [], [], 0
    for entry in manifest["splits"][split]["shards"]:
        if limit is not None and have >= limit:
            break
        path = shard_dir / entry["file"]
        if not path.exists():
            raise ShardError(f"{path}: shard listed in the manifest is missing")
        if verify and sha256_file(path) != entry["sha256"]:
            raise ShardError(f"{path}: sha256 does not match the manifest")
        chunk = torch.load(path, map_location="cpu", weights_only=True)
        if chunk["labels"].numel() != entry["count"]:
            raise ShardError(f"{path}: {chunk['labels'].numel()} images, manifest says {entry['count']}")
        images.append(chunk["images"])
        labels.append(chunk["labels"])
        have += entry["count"]
    if not images:
        shape = manifest["splits"][split].get("shape", [0, 0, 0])
        return torch.empty((0, *shape), dtype=torch.uint8), torch.empty(0, dtype=torch.long)
    x, y = torch.cat(images), torch.cat(labels)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y


def prepare_digits(
    out_dir: str | os.PathLike,
    *,
    test_fraction: float = 0.3,
    split_seed: int = 0,
    input_size: int = 32,
) -> dict[str, Any]:
    """scikit-learn's bundled digits (1,797 real 8x8 handwritten digits, 10 classes, pixel
    values 0..16) as shards with a fixed, seeded, stratified train/test split.

    Images are stored as they are (uint8 (N, 1, 8, 8), values 0..16). The manifest's
    ``preprocess`` brings them to the models' input: scale 1/16 to [0, 1], bilinear resize
    to ``input_size`` (32 for LeNet-5, whose input is 32 x 32 in LeCun et al. 1998), then
    normalise with the mean and std of the *training* split after that resize.

    Source: Alpaydin & Kaynak 1995, UCI "Optical Recognition of Handwritten Digits" (test
    part), as shipped by ``sklearn.datasets.load_digits``.

    Raises:
        ValueError: ``test_fraction`` not in (0, 1).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    digits = load_digits()
    x = np.asarray(digits.images, dtype=np.float64)
    if x.min() < 0 or x.max() > 16 or not np.all(x == np.round(x)):
        raise ValueError("load_digits returned values outside the integers 0..16")
    images = torch.from_numpy(x.astype(np.uint8))[:, None]  # (N, 1, 8, 8)
    labels = torch.from_numpy(np.asarray(digits.target, dtype=np.int64))
    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        idx, test_size=test_fraction, random_state=split_seed, stratify=labels.numpy()
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    x_train = images[train_idx]
    raw = Preprocess(scale=1 / 16, mean=(0.0,), std=(1.0,), size=input_size)(x_train)
    preprocess = Preprocess(
        scale=1 / 16, mean=(round(raw.mean().item(), 6),), std=(round(raw.std().item(), 6),), size=input_size
    )
    return write_shards(
        out_dir,
        {"train": (x_train, labels[train_idx]), "test": (images[test_idx], labels[test_idx])},
        dataset="digits",
        num_classes=10,
        classes=[str(i) for i in range(10)],
        preprocess=preprocess,
        shard_size=10_000,
        source={
            "loader": "sklearn.datasets.load_digits",
            "test_fraction": test_fraction,
            "split_seed": split_seed,
            "train_index": train_idx.tolist(),
            "test_index": test_idx.tolist(),
        },
    )


def _normalisation(x_train: Tensor, scale: float, size: int | None) -> Preprocess:
    """Per-channel mean/std of the training split after scaling (and resizing)."""
    raw = Preprocess(scale=scale, mean=(0.0,), std=(1.0,), size=size)(x_train)
    mean = raw.mean(dim=(0, 2, 3)).tolist()
    std = raw.std(dim=(0, 2, 3)).tolist()
    return Preprocess(scale=scale, mean=tuple(round(m, 6) for m in mean), std=tuple(round(v, 6) for v in std), size=size)


def prepare_mnist(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    verify_checksums: bool = True,
) -> dict[str, Any]:
    """MNIST (LeCun et al. 1998; 60,000 train + 10,000 test 28 x 28 digits) from the official
    idx files, read by ``torchvision.datasets.MNIST`` (no download).

    ``root`` holds the four files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, gzipped (``.gz``, as
    distributed) or not, either directly or in torchvision's layout ``MNIST/raw/``. With
    ``verify_checksums``, every ``.gz`` is checked against the md5 torchvision lists for the
    official files. Images are stored uint8 (N, 1, 28, 28); ``preprocess`` scales by 1/255
    and normalises with the training split's mean and std (0.1307 / 0.3081 on the real data).

    Raises:
        FileNotFoundError: a file is missing (names it and the folders searched).
        ValueError: a checksum does not match (names the file).
    """
    import gzip
    import shutil
    import tempfile

    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import check_md5

    root = Path(root)
    md5 = {name: digest for name, digest in MNIST.resources}
    with tempfile.TemporaryDirectory(dir=Path(out_dir).parent if Path(out_dir).parent.exists() else None) as tmp:
        raw = Path(tmp) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for gz_name in md5:
            name = gz_name[: -len(".gz")]
            for folder in (root, root / "MNIST" / "raw"):
                plain, gz = folder / name, folder / gz_name
                if gz.exists():
                    if verify_checksums and not check_md5(str(gz), md5[gz_name]):
                        raise ValueError(f"{gz}: md5 does not match the official MNIST file")
                    with gzip.open(gz, "rb") as src, open(raw / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    break
                if plain.exists():
                    os.symlink(plain.resolve(), raw / name)
                    break
            else:
                raise FileNotFoundError(f"MNIST file {name}[.gz] not found in {root} or {root / 'MNIST' / 'raw'}")
        splits = {}
        for split, train in (("train", True), ("test", False)):
            ds = MNIST(tmp, train=train, download=False)
            splits[split] = (ds.data[:, None].contiguous(), ds.targets.to(torch.int64))
    preprocess = _normalisation(splits["train"][0], 1 / 255, None)
    return write_shards(
        out_dir, splits, dataset="mnist", num_classes=10, classes=[str(i) for i in range(10)],
        preprocess=preprocess, shard_size=10_000, source={"loader": "torchvision.datasets.MNIST", "root": str(root)},
    )  # fmt: skip
