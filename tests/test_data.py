"""Digits shards: split, contents, manifest, errors."""

import json

import numpy as np
import pytest
import torch

from netperturb.data import Preprocess, ShardError, load_split, read_manifest, write_shards


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
