"""scikit-learn's bundled digits (1,797 8x8 images, 10 classes) as shards."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from netperturb.core.preprocess import Preprocess
from netperturb.datasets.shards import write_shards

__all__ = ["prepare_digits"]


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
