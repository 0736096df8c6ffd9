"""CIFAR-10 (the python pickles) as shards (a dataset of Pravin et al. 2024)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from netperturb.core.preprocess import Preprocess
from netperturb.datasets.shards import write_shards

__all__ = ["prepare_cifar10"]


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
