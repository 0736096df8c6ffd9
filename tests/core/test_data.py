"""Digits shards: split, contents, manifest, errors."""

import json

import numpy as np
import pytest
import torch

from netperturb.core.preprocess import Preprocess
from netperturb.datasets.shards import ShardError, load_split, read_manifest, write_shards


def test_digits_split_is_stratified_complete_and_exact(digits_shards):
    from sklearn.datasets import load_digits

    m = read_manifest(digits_shards)
    train, test = load_split(digits_shards, "train"), load_split(digits_shards, "test")
    assert len(train[1]) + len(test[1]) == 1797
    assert len(test[1]) == m["splits"]["test"]["count"] == 540
    # disjoint and covering
    tr, te = set(m["source"]["train_index"]), set(m["source"]["test_index"])
    assert not tr & te and len(tr | te) == 1797
    # pixels and labels are the original ones, in index order
    d = load_digits()
    idx = np.array(m["source"]["test_index"])
    assert np.array_equal(test[0][:, 0].numpy(), d.images[idx].astype(np.uint8))
    assert np.array_equal(test[1].numpy(), d.target[idx])
    # stratified: every class within one image of its share
    counts = np.bincount(test[1].numpy(), minlength=10)
    assert counts.min() >= 52 and counts.max() <= 56


def test_preprocess_normalises_the_training_split(digits_shards):
    m = read_manifest(digits_shards)
    pre = Preprocess.from_dict(m["preprocess"])
    x = pre(load_split(digits_shards, "train")[0])
    assert x.shape[-2:] == (32, 32)
    assert x.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert x.std().item() == pytest.approx(1.0, abs=1e-3)


def test_shards_roundtrip_limit_and_checks(tmp_path):
    imgs = torch.randint(0, 255, (25, 3, 4, 4), dtype=torch.uint8)
    labels = torch.arange(25) % 5
    write_shards(tmp_path, {"val": (imgs, labels)}, dataset="x", num_classes=5, shard_size=10)
    m = read_manifest(tmp_path)
    assert [s["count"] for s in m["splits"]["val"]["shards"]] == [10, 10, 5]
    x, y = load_split(tmp_path, "val", verify=True)
    assert torch.equal(x, imgs) and torch.equal(y, labels)
    x, y = load_split(tmp_path, "val", limit=12)
    assert torch.equal(x, imgs[:12])
    with pytest.raises(ShardError, match="no split 'test'"):
        load_split(tmp_path, "test")
    (tmp_path / "val-00001.pt").write_bytes(b"corrupt")
    with pytest.raises(ShardError, match="val-00001.pt: sha256"):
        load_split(tmp_path, "val", verify=True)
    (tmp_path / "val-00001.pt").unlink()
    with pytest.raises(ShardError, match="val-00001.pt: shard listed in the manifest is missing"):
        load_split(tmp_path, "val")
    with pytest.raises(ValueError, match="labels outside"):
        write_shards(tmp_path / "b", {"val": (imgs, labels + 5)}, dataset="x", num_classes=5)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ShardError, match="format 'other'"):
        read_manifest(tmp_path)


def _write_idx(path, array, gz=True):
    """An idx file (LeCun's MNIST format): magic 0x0008 <ndim>, big-endian dims, uint8 data."""
    import gzip
    import struct

    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("gz,layout", [(True, "flat"), (False, "torchvision")])
def test_prepare_mnist_from_official_idx_files(tmp_path, gz, layout):
    from netperturb.datasets.mnist import prepare_mnist

    rng = np.random.default_rng(0)
    root = tmp_path / "mnist"
    folder = root if layout == "flat" else root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    arrays = {"train": (rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 10, 12)),
              "t10k": (rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5))}  # fmt: skip
    for prefix, (x, y) in arrays.items():
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", x, gz)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", y, gz)
    # the tiny files cannot carry the official md5s
    m = prepare_mnist(root, tmp_path / "shards", verify_checksums=False)
    assert m["splits"]["train"]["count"] == 12 and m["splits"]["test"]["count"] == 5
    x, y = load_split(tmp_path / "shards", "test")
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.uint8
    assert np.array_equal(x[:, 0].numpy(), arrays["t10k"][0]) and np.array_equal(y.numpy(), arrays["t10k"][1])
    pre = Preprocess.from_dict(m["preprocess"])
    assert pre.scale == pytest.approx(1 / 255) and pre.size is None
    if gz:
        with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: md5 does not match"):
            prepare_mnist(root, tmp_path / "shards2", verify_checksums=True)
    (folder / ("t10k-labels-idx1-ubyte" + (".gz" if gz else ""))).unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        prepare_mnist(root, tmp_path / "shards3", verify_checksums=False)
