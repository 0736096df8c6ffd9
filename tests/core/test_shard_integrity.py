"""Every job's data is checked against the manifest that made it, and its digest enters each row
(issue 27, cases 1 and 11). Before: shards were loaded with verify=False everywhere, so a shard
replaced by another split's (same image count) was used silently (one job's level-0 top-1
0.7333, every other 0.7222), and a truncated shard failed with `OSError: [Errno 22]`, no file
named."""

from __future__ import annotations

import shutil

import pytest
import torch

from netperturb.core.io import torch_save
from netperturb.datasets.shards import ShardError, data_digest, load_split, read_manifest, split_digest
from netperturb.perturb.grid import COLUMNS
from netperturb.core.context import RunContext
from netperturb.studies.cheney2017.jobs import baseline, perturb_layer



def _ctx(checkpoint, shards) -> RunContext:
    return RunContext(run="t", dataset="digits", shard_dir=str(shards), model="lenet5", model_file=str(checkpoint),
                      study_seed=7, batch_size=540, device="cpu", progress=False)  # fmt: skip


@pytest.fixture
def shards(digits_shards, tmp_path):
    """A private copy of the digits shards (the tests damage it)."""
    out = tmp_path / "shards"
    shutil.copytree(digits_shards, out)
    return out


def _swap_in_train_images(shards):
    """Replace the test shard by the first 540 training images: another split's file with the same
    image count (and the same size), as case 1 does."""
    x, y = load_split(shards, "train")
    torch_save({"images": x[:540].clone(), "labels": y[:540].clone()}, shards / "test-00000.pt")


def test_a_shard_replaced_by_another_splits_stops_the_job_naming_the_file(lenet_checkpoint, shards, tmp_path):
    _swap_in_train_images(shards)
    assert len(torch.load(shards / "test-00000.pt", weights_only=True)["labels"]) == 540  # same count
    for job in (lambda out: baseline(_ctx(lenet_checkpoint, shards), out),
                lambda out: perturb_layer(_ctx(lenet_checkpoint, shards), out, layer="fc5",
                                          perturbation="gaussian_noise", options={"levels": [0.0, 1.0]}, repeats=1)):  # fmt: skip
        out = tmp_path / "out.csv"
        with pytest.raises(ShardError) as e:
            job(out)
        msg = str(e.value)
        assert msg.startswith(f"{shards / 'test-00000.pt'}: sha256 ")
        assert f"recorded in {shards / 'manifest.json'}" in msg
        assert "Remedy: the shards are made by the workflow's prepare rule" in msg and f"rm -r {shards}" in msg
        assert not out.exists() and not (tmp_path / "out.csv.partial.jsonl").exists()  # nothing written


def test_a_truncated_shard_stops_the_job_naming_the_file(shards):
    data = (shards / "test-00000.pt").read_bytes()
    (shards / "test-00000.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=r"test-00000.pt: sha256 .* differs .*Remedy"):
        load_split(shards, "test")
    # unverified (the fast path a caller may ask for), it is still named, never a bare OSError
    with pytest.raises(ShardError, match=r"test-00000.pt: not a readable shard .*Remedy"):
        load_split(shards, "test", verify=False)


def test_the_data_digest_is_in_every_row_and_identifies_the_split(lenet_checkpoint, shards, tmp_path):
    m = read_manifest(shards)
    digest = data_digest(shards, "test")
    assert digest == split_digest(m, "test") and len(digest) == 12 and digest != split_digest(m, "train")
    assert "data_digest" in COLUMNS and COLUMNS.index("data_digest") == COLUMNS.index("weights") + 1
    base = baseline(_ctx(lenet_checkpoint, shards), tmp_path / "b.csv")
    grid = perturb_layer(_ctx(lenet_checkpoint, shards), tmp_path / "p.csv", layer="fc5", perturbation="node_knockout",
                         options={"levels": [0.0, 0.5]}, repeats=2)  # fmt: skip
    assert set(base["data_digest"]) == set(grid["data_digest"]) == {digest}
    # the digest changes with any shard: the manifest's record of the test shard
    m["splits"]["test"]["shards"][0]["sha256"] = "0" * 64
    assert split_digest(m, "test") != digest
