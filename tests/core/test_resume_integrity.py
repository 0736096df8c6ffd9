"""Resume files that cannot be read, and writes that fail (issue 27, cases 10 and 12). Before: a
partial file with a valid header and a `"value": null` cell gave an AttributeError traceback on
every rerun; on a full disk the first append left a 0-byte partial file behind, the next run
appended cells to it without a header line (discarded if that run was interrupted too), and the
error was a bare `[Errno 28]` traceback."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from netperturb.core import resume
from netperturb.core.context import RunContext
from netperturb.core.resume import CellStore, counts_from_json, partial_path
from netperturb.studies.cheney2017.jobs import perturb_layer
from resume_kill import Killed, kill_after

FP = {"weights": "abc123", "batch_size": 7}
KW = dict(layer="fc5", perturbation="gaussian_noise", options={"levels": [0.0, 0.5, 1.0]}, repeats=2, engine="functional")


def _ctx(checkpoint, shards) -> RunContext:
    return RunContext(run="t", dataset="digits", shard_dir=str(shards), model="lenet5", model_file=str(checkpoint),
                      study_seed=7, batch_size=540, device="cpu", progress=False)  # fmt: skip


def test_a_partial_file_with_a_null_cell_is_set_aside_and_the_job_starts_afresh(lenet_checkpoint, digits_shards,
                                                                                tmp_path, monkeypatch, caplog):  # fmt: skip
    ref = tmp_path / "ref.csv"
    perturb_layer(_ctx(lenet_checkpoint, digits_shards), ref, **KW)
    out = tmp_path / "out.csv"
    with monkeypatch.context() as m:
        kill_after(m, 2)
        with pytest.raises(Killed):
            perturb_layer(_ctx(lenet_checkpoint, digits_shards), out, **KW)
    partial = partial_path(out)
    lines = partial.read_text().splitlines()
    cell = json.loads(lines[1])
    last = cell["key"][:2] + [1.0, 1]  # the job's last cell, not computed yet
    assert all(json.loads(line)["key"] != last for line in lines[1:])
    with open(partial, "a") as f:  # a valid header, then a cell whose value is null
        f.write(json.dumps({"key": last, "value": None}) + "\n")
    with caplog.at_level(logging.WARNING, logger="netperturb"):
        perturb_layer(_ctx(lenet_checkpoint, digits_shards), out, **KW)  # no traceback: the job starts afresh
    assert out.read_bytes() == ref.read_bytes()
    aside = partial.with_name(partial.name + ".unreadable")
    assert aside.exists() and not partial.exists()
    assert f"resume: {partial} cannot be read: the cell " in caplog.text and "has no value (null)" in caplog.text
    assert f"set aside as {aside.name}" in caplog.text


def test_a_value_the_job_cannot_read_or_no_header_sets_the_file_aside(tmp_path, caplog):
    out = tmp_path / "job.csv"
    CellStore(out, FP).put([((0,), {"not": "counts"})])
    with caplog.at_level(logging.WARNING, logger="netperturb"):
        s = CellStore(out, FP, check=counts_from_json)
    assert len(s) == 0 and "has a value the job cannot read (TypeError" in caplog.text
    assert (tmp_path / "job.csv.partial.jsonl.unreadable").exists() and not partial_path(out).exists()
    partial_path(out).write_text(json.dumps({"key": [1], "value": 1}) + "\n")  # cells, no header line
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="netperturb"):
        s = CellStore(out, FP)
    assert len(s) == 0 and "it has no header line" in caplog.text and not partial_path(out).exists()


def test_an_empty_partial_file_is_removed_and_the_next_cells_get_a_header(tmp_path, caplog):
    out = tmp_path / "job.csv"
    partial_path(out).write_bytes(b"")  # what a full disk left behind before
    with caplog.at_level(logging.WARNING, logger="netperturb"):
        s = CellStore(out, FP)
    assert "is empty (left by a failed write); removed" in caplog.text
    s.put([((0,), 1)])
    first = json.loads(partial_path(out).read_text().splitlines()[0])
    assert first["netperturb_cells"] == resume.FORMAT and len(CellStore(out, FP)) == 1


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_leaves_no_headerless_file_and_names_the_file_and_the_remedy(tmp_path, monkeypatch):
    out = tmp_path / "job.csv"
    with monkeypatch.context() as m:  # the first write (header + first cells) fails
        m.setattr(Path, "write_bytes", _enospc)
        with pytest.raises(OSError) as e:
            CellStore(out, FP).put([((0,), 1)])
    assert e.value.errno == errno.ENOSPC
    assert str(e.value).startswith(f"[Errno 28] cannot write {partial_path(out)}: No space left on device. Remedy: free space")
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary file
    s = CellStore(out, FP)
    s.put([((0,), 1)])
    with monkeypatch.context() as m:  # a later append fails
        m.setattr(resume, "open", _enospc, raising=False)
        with pytest.raises(OSError, match=r"cannot write .*job.csv.partial.jsonl: No space left on device; the 1 cells "
                                          r"finished before are kept there .*Remedy: free space"):  # fmt: skip
            s.put([((1,), 2)])
    assert len(CellStore(out, FP)) == 1


def test_a_read_only_output_folder_is_named_with_its_remedy(tmp_path, monkeypatch):
    import pandas as pd

    from netperturb.core.io import write_csv

    def erofs(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("tempfile.mkstemp", erofs)
    with pytest.raises(OSError, match=rf"\[Errno 30\] cannot write {tmp_path / 'x.csv'}: Read-only file system\. "
                                      r"Remedy: make its folder writable"):  # fmt: skip
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "x.csv")


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a 40 KB tmpfs (root only); the monkeypatched tests above cover it")
def test_a_job_on_a_full_40kb_tmpfs_then_freed_gives_the_uninterrupted_table(lenet_checkpoint, digits_shards, tmp_path):
    ref = tmp_path / "ref.csv"
    perturb_layer(_ctx(lenet_checkpoint, digits_shards), ref, **KW)
    disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    if not _tmpfs(disk, "40k"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:  # fill the disk
            while os.write(fd, b"\0" * 1024):
                pass
        except OSError as e:
            assert e.errno == errno.ENOSPC
        finally:
            os.close(fd)
        out = disk / "out.csv"
        with pytest.raises(OSError) as e:
            perturb_layer(_ctx(lenet_checkpoint, digits_shards), out, **KW)
        assert e.value.errno == errno.ENOSPC and f"cannot write {partial_path(out)}" in str(e.value)
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no 0-byte partial, no temporary file
        filler.unlink()  # space freed: the same command again
        perturb_layer(_ctx(lenet_checkpoint, digits_shards), out, **KW)
        assert out.read_bytes() == ref.read_bytes() and not partial_path(out).exists()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
