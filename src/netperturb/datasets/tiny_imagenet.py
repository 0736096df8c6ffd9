"""Tiny ImageNet (tiny-imagenet-200) as shards (a dataset of Pravin et al. 2024)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netperturb.datasets.cifar10 import _normalisation_chunked
from netperturb.datasets.shards import write_shards

__all__ = ["prepare_tiny_imagenet"]


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
