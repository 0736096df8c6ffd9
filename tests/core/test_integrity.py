"""Damage to files made earlier is found before they are used (issue 13, item 7)."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from netperturb.core.integrity import find_damage, record_digest, sidecar_path
from netperturb.models import get_model
from netperturb.models.checkpoints import load_checkpoint, save_checkpoint
from netperturb.models.weights import fetch_weights
from netperturb.core.preprocess import Preprocess


def _checkpoint(path):
    torch.manual_seed(0)
    save_checkpoint(path, get_model("lenet5", num_classes=10, in_channels=1), arch="lenet5", num_classes=10,
                    in_channels=1, preprocess=Preprocess(scale=1 / 255, mean=(0.5,), std=(0.5,), size=None))  # fmt: skip


def test_a_checkpoint_is_recorded_and_truncation_is_found(tmp_path):
    p = tmp_path / "m.pt"
    _checkpoint(p)
    rec = sidecar_path(p).read_text()
    assert hashlib.sha256(p.read_bytes()).hexdigest() in rec
    assert find_damage(p) is None
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    why = find_damage(p)
    assert why and "differs from the" in why and f"size {len(data) // 2} B, was {len(data)} B" in why
    # the job-level message names the file and the remedy
    with pytest.raises(ValueError, match=rf"checkpoint {p}: unreadable .*delete it and make it again.*rm {p}"):
        load_checkpoint(p)
    # same bytes again, only touched: intact
    p.write_bytes(data)
    os.utime(p, ns=(1, 1))
    assert find_damage(p) is None
    # a new checkpoint replaces the record (never a stale one)
    _checkpoint(p)
    assert find_damage(p) is None and str(os.stat(p).st_size) in sidecar_path(p).read_text()


def test_without_a_record_a_truncated_torch_file_is_still_found(tmp_path):
    p = tmp_path / "old.pt"
    torch.save({"a": torch.zeros(1000)}, p)
    assert find_damage(p) is None
    p.write_bytes(p.read_bytes()[:-100])
    assert "not a complete PyTorch file" in find_damage(p)
    assert find_damage(tmp_path / "missing.pt") is None
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert find_damage(other) is None


def test_a_weights_file_is_checked_against_the_prefix_in_its_name(tmp_path):
    src = tmp_path / "src.pth"
    torch.save({"w": torch.ones(10)}, src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    dst = fetch_weights(src.as_uri(), tmp_path / "weights" / f"net-{digest[:8]}.pth", digest[:8], progress=False)
    assert digest in sidecar_path(dst).read_text() and find_damage(dst, sha256_prefix=digest[:8]) is None
    dst.write_bytes(b"\0" * 64)  # damaged later
    assert "differs from the" in find_damage(dst, sha256_prefix=digest[:8])
    sidecar_path(dst).unlink()  # no record: the prefix decides
    assert "does not start with" in find_damage(dst, sha256_prefix=digest[:8])
    # a file unchanged since its record was written is trusted without hashing
    record_digest(dst)
    assert find_damage(dst, sha256_prefix=digest[:8]) is None
