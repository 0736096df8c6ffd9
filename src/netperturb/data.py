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


# --- CIFAR-10 and Tiny ImageNet (the datasets of Pravin et al. 2024) ---------------------------

DATASETS.update({
    "cifar10": {"num_classes": 10, "in_channels": 3, "eval_split": "test"},
    "tiny_imagenet": {"num_classes": 200, "in_channels": 3, "eval_split": "test"},
})  # fmt: skip
__all__ += ["prepare_cifar10", "prepare_tiny_imagenet"]


def _normalisation_chunked(x_train: Tensor, scale: float, chunk: int = 8192) -> Preprocess:
    """Per-channel mean/std (ddof 1) of the scaled training split, accumulated in float64
    chunk by chunk (a whole float copy of Tiny ImageNet's training split would take ~5 GB)."""
    c = x_train.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(x_train), chunk):
        v = x_train[start : start + chunk].to(torch.float64) * scale
        s += v.sum(dim=(0, 2, 3))
        s2 += (v * v).sum(dim=(0, 2, 3))
    n = x_train.shape[0] * x_train.shape[2] * x_train.shape[3]
    mean = s / n
    var = (s2 - n * mean * mean) / max(n - 1, 1)
    return Preprocess(
        scale=scale, mean=tuple(round(float(m), 6) for m in mean),
        std=tuple(round(float(v), 6) for v in var.clamp_min(0).sqrt()), size=None,
    )  # fmt: skip


def prepare_cifar10(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    verify_checksums: bool = True,
) -> dict[str, Any]:
    """CIFAR-10 (Krizhevsky 2009; 50,000 train + 10,000 test 32 x 32 RGB images, 10 classes)
    from the official "python version", read by ``torchvision.datasets.CIFAR10`` (no
    download).

    ``root`` holds ``cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``,
    ``test_batch``, ``batches.meta``: pickled dicts) or the archive
    ``cifar-10-python.tar.gz``, which is then extracted to a temporary folder. With
    ``verify_checksums`` every file (and the archive) is checked against the md5s torchvision
    lists for the official files; without, they are only required to exist (tiny test
    files). Images are stored uint8 (N, 3, 32, 32); ``preprocess`` scales by 1/255 and
    normalises per channel with the training split's mean and std.

    Raises:
        FileNotFoundError: neither the folder nor the archive, or a batch file missing
            (names it).
        ValueError: a checksum does not match (names the file).
    """
    import tempfile

    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_md5, extract_archive

    class _Unchecked(CIFAR10):  # same reader; the md5s were checked (or waived) below
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    root = Path(root)
    files = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}
    files[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    with tempfile.TemporaryDirectory(dir=Path(out_dir).parent if Path(out_dir).parent.exists() else None) as tmp:
        base = root
        if not (root / CIFAR10.base_folder).is_dir():
            archive = root / CIFAR10.filename
            if not archive.exists():
                raise FileNotFoundError(f"CIFAR-10: neither {root / CIFAR10.base_folder}/ nor {archive} exists")
            if verify_checksums and not check_md5(str(archive), CIFAR10.tgz_md5):
                raise ValueError(f"{archive}: md5 does not match the official CIFAR-10 archive")
            extract_archive(str(archive), tmp)
            base = Path(tmp)
        for name, md5 in files.items():
            path = base / CIFAR10.base_folder / name
            if not path.exists():
                raise FileNotFoundError(f"CIFAR-10 file {path} not found")
            if verify_checksums and not check_md5(str(path), md5):
                raise ValueError(f"{path}: md5 does not match the official CIFAR-10 file")
        splits, classes = {}, None
        for split, train in (("train", True), ("test", False)):
            ds = _Unchecked(str(base), train=train, download=False)
            images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
            splits[split] = (images, torch.as_tensor(ds.targets, dtype=torch.int64))
            classes = list(ds.classes)
    return write_shards(
        out_dir, splits, dataset="cifar10", num_classes=10, classes=classes,
        preprocess=_normalisation_chunked(splits["train"][0], 1 / 255), shard_size=10_000,
        source={"loader": "torchvision.datasets.CIFAR10", "root": str(root), "verify_checksums": verify_checksums},
    )  # fmt: skip


def _read_rgb(path: str | os.PathLike, size: int) -> np.ndarray:
    """One image as uint8 (3, size, size); grayscale JPEGs are converted to RGB.

    Raises:
        ValueError: not ``size x size``; OSError: unreadable.
    """
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise ValueError(f"size {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size}")
    return arr.transpose(2, 0, 1)


def prepare_tiny_imagenet(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_bad_fraction: float = 0.0,
) -> dict[str, Any]:
    """Tiny ImageNet (Stanford CS231n; 200 classes, 64 x 64 RGB; 100,000 train and 10,000
    labelled validation images) from its distributed layout (no download).

    ``root`` is the folder ``tiny-imagenet-200`` (or its parent) with ``wnids.txt``,
    ``train/<wnid>/images/*.JPEG`` (listed by ``torchvision.datasets.ImageFolder``; the
    classes are the wnids in sorted order, which must be those of ``wnids.txt``) and
    ``val/images/*.JPEG`` with ``val/val_annotations.txt`` (file, wnid, box). The labelled
    validation set becomes the ``test`` split (the official test set has no labels); the
    classes are those of ``wnids.txt`` (200 in the real set).
    Images are decoded with PIL (grayscale ones converted to RGB) into uint8 (N, 3, 64, 64);
    ``preprocess`` scales by 1/255 and normalises with the training split's per-channel
    mean and std. Unreadable images (or not 64 x 64) are skipped and listed in the
    manifest's ``skipped``; more than ``max_bad_fraction`` of a split fails.

    Raises:
        FileNotFoundError: the layout is incomplete (names the missing file or folder).
        ValueError: class folders differ from ``wnids.txt``, an annotation names an unknown
            wnid, or too many bad images (names the first ones).
    """
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not (root / "wnids.txt").exists() and (root / "tiny-imagenet-200" / "wnids.txt").exists():
        root = root / "tiny-imagenet-200"
    for need in ("wnids.txt", "train", "val/images", "val/val_annotations.txt"):
        if not (root / need).exists():
            raise FileNotFoundError(f"Tiny ImageNet: {root / need} not found")
    wnids = sorted({line.strip() for line in (root / "wnids.txt").read_text().splitlines() if line.strip()})
    folder = ImageFolder(str(root / "train"), allow_empty=True)
    if folder.classes != wnids:
        extra, missing = sorted(set(folder.classes) - set(wnids)), sorted(set(wnids) - set(folder.classes))
        raise ValueError(f"{root / 'train'}: class folders differ from wnids.txt (extra {extra[:5]}, missing {missing[:5]})")
    index = {w: i for i, w in enumerate(wnids)}
    val = []
    for n, line in enumerate((root / "val" / "val_annotations.txt").read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise ValueError(f"{root / 'val' / 'val_annotations.txt'} line {n}: unknown or missing wnid in {line!r}")
        val.append((str(root / "val" / "images" / parts[0]), index[parts[1]]))
    skipped: list[dict[str, str]] = []
    splits = {}
    for split, samples in (("train", folder.samples), ("test", val)):
        images = np.empty((len(samples), 3, 64, 64), dtype=np.uint8)
        labels = np.empty(len(samples), dtype=np.int64)
        n_ok, bad = 0, []
        for path, label in samples:
            try:
                images[n_ok] = _read_rgb(path, 64)
            except (OSError, ValueError) as e:
                bad.append({"file": path, "split": split, "reason": str(e)})
                continue
            labels[n_ok] = label
            n_ok += 1
        if samples and len(bad) > max_bad_fraction * len(samples):
            first = "; ".join(f"{b['file']}: {b['reason']}" for b in bad[:3])
            raise ValueError(f"Tiny ImageNet {split}: {len(bad)} of {len(samples)} images unreadable "
                             f"(max_bad_fraction {max_bad_fraction}): {first}")  # fmt: skip
        skipped += bad
        splits[split] = (torch.from_numpy(images[:n_ok]), torch.from_numpy(labels[:n_ok]))
    return write_shards(
        out_dir, splits, dataset="tiny_imagenet", num_classes=len(wnids), classes=wnids,
        preprocess=_normalisation_chunked(splits["train"][0], 1 / 255), shard_size=10_000, skipped=skipped,
        source={"loader": "torchvision.datasets.ImageFolder + PIL", "root": str(root), "test_split": "val"},
    )  # fmt: skip
