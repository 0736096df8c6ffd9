"""MNIST from the official idx files as shards."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from netperturb.datasets.shards import _normalisation, write_shards

__all__ = ["prepare_mnist"]


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


