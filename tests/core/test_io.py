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


def test_nan_is_written_as_nan_and_text_stays_text(tmp_path):
    # the Design page of the docs, "Result schema": NaN / Inf are written as such, never as empty fields
    df = pd.DataFrame({"model": ["a", "b"], "loss": [float("nan"), float("inf")], "top1": [0.5, 1.0],
                       "layers_trained": ["", None]})
    write_csv(df, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == "model,loss,top1,layers_trained\na,NaN,0.5,\nb,inf,1.0,\n"


def test_tables_without_nan_are_written_as_before(tmp_path):
    df = pd.DataFrame({"model": ["lenet5", "NA"], "level": [0.1, 1 / 3], "repeat": [0, 1], "top1": [0.25, 2 / 3],
                       "weights": ["", "abc"]})
    write_csv(df, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == df.to_csv(index=False)


def _job_csv(path, loss):
    from netperturb.perturb.grid import COLUMNS

    row = {c: "x" for c in COLUMNS} | {"layer_index": 1, "level": 1e40, "repeat": 0, "seed": 7, "n_images": 10,
                                       "top1": 0.1, "top5": 0.5, "loss": loss, "sdc1": 0.0, "sdc5": 0.0, "due": 0.0}
    path.write_text(",".join(COLUMNS) + "\n" + ",".join(str(row[c]) for c in COLUMNS) + "\n")


@pytest.mark.parametrize("field", ["", "nan", "NaN"])
def test_merged_parquet_keeps_float_columns_with_a_nan_loss(tmp_path, field):
    # issue 13.1: one NaN loss (older writers: an empty field) turned the whole column into text
    from netperturb.core.merge import merge_tables

    _job_csv(tmp_path / "a.csv", field)
    _job_csv(tmp_path / "b.csv", "2.5")
    merged = merge_tables([tmp_path / "a.csv", tmp_path / "b.csv"], tmp_path / "m.csv", tmp_path / "m.parquet")
    back = pd.read_parquet(tmp_path / "m.parquet")
    for df in (merged, back):
        assert pd.api.types.is_float_dtype(df["loss"]) and pd.api.types.is_float_dtype(df["top1"])
        assert df["loss"].isna().tolist() == [True, False] and df["loss"].mean() == 2.5
        assert df["model"].tolist() == ["x", "x"]
    assert (tmp_path / "m.csv").read_text().splitlines()[1].split(",")[14] == "NaN"


def test_a_numeric_column_with_text_names_file_column_and_value(tmp_path):
    from netperturb.core.merge import read_table

    _job_csv(tmp_path / "a.csv", "oops")
    with pytest.raises(ValueError, match=r"a\.csv: column 'loss' must hold numbers, found 'oops'"):
        read_table(tmp_path / "a.csv")


def test_atomic_write_fsyncs_before_the_rename(tmp_path, monkeypatch):
    import netperturb.core.io as io_mod

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(io_mod.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(io_mod.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write_csv(pd.DataFrame({"a": [1]}), tmp_path / "out.csv")
    assert events[:2] == ["fsync", "replace"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_failing_fsync_removes_the_temp_file(tmp_path, monkeypatch):
    import netperturb.core.io as io_mod

    def boom(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(io_mod.os, "fsync", boom)
    with pytest.raises(OSError, match="disk gone"):
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "out.csv")
    assert list(tmp_path.iterdir()) == []
