"""Atomic outputs: an interrupted write leaves nothing a rerun would trust."""

import os

import pandas as pd
import pytest

from netperturb.core.io import atomic_path, write_csv


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "sub" / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a tab")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []


def test_failed_write_keeps_previous_content_and_mode(tmp_path):
    target = tmp_path / "out.csv"
    write_csv(pd.DataFrame({"a": [1]}), target)
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_text("x")
            raise KeyError
    assert pd.read_csv(target)["a"].tolist() == [1]


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_torch_save_bytes_do_not_depend_on_the_path(tmp_path):
    # the checkpoint's `weights` id is a sha256 of the file: equal weights must give equal ids
    import torch

    from netperturb.core.io import sha256_file, torch_save

    obj = {"weight": torch.arange(12.0).reshape(3, 4), "arch": "x"}
    torch_save(obj, tmp_path / "a.pt")
    torch_save(obj, tmp_path / "sub" / "b.pt")
    assert sha256_file(tmp_path / "a.pt") == sha256_file(tmp_path / "sub" / "b.pt")
    back = torch.load(tmp_path / "sub" / "b.pt", weights_only=True)
    assert torch.equal(back["weight"], obj["weight"]) and back["arch"] == "x"
    obj["weight"][0, 0] = -1.0
    torch_save(obj, tmp_path / "c.pt")
    assert sha256_file(tmp_path / "c.pt") != sha256_file(tmp_path / "a.pt")
