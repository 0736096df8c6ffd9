"""netperturb.core.resume: the partial file of finished cells (issue 13, item 3)."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from netperturb.core.evaluate import Counts
from netperturb.core.resume import CellStore, counts_from_json, counts_to_json, partial_path

FP = {"weights": "abc123", "batch_size": 7}


def value(i: int) -> dict:
    """A cell's value: awkward floats included (NaN, inf, -0.0, 0.1 + 0.2)."""
    return {"i": i, "x": 0.1 + 0.2 * i, "nan": math.nan, "inf": -math.inf if i % 2 else math.inf, "z": -0.0, "s": f"c{i}"}


def same(a, b) -> bool:
    return json.dumps(a, allow_nan=True) == json.dumps(b, allow_nan=True)


def test_cells_read_back_exactly_and_only_new_ones_are_appended(tmp_path):
    out = tmp_path / "job.csv"
    s = CellStore(out, FP)
    assert len(s) == 0 and not partial_path(out).exists()  # nothing written before the first cell
    assert s.put([(("fc5", "noise", 0.1, 0), value(0)), (("fc5", "noise", 0.30000000000000004, 1), value(1))]) == 2
    assert s.put([(("fc5", "noise", 0.1, 0), value(9))]) == 0  # stored already: the first value stays
    assert partial_path(out) == tmp_path / "job.csv.partial.jsonl"
    lines = partial_path(out).read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["fingerprint"] == FP
    r = CellStore(out, FP)
    assert (r.reused, r.computed, len(r)) == (2, 0, 2)
    assert same(r.get(("fc5", "noise", 0.1, 0)), value(0)) and same(r.get(("fc5", "noise", 0.30000000000000004, 1)), value(1))
    assert ("fc5", "noise", 0.3, 1) not in r  # keys compare exactly
    assert math.copysign(1, r.get(("fc5", "noise", 0.1, 0))["z"]) == -1
    with pytest.raises(KeyError):
        r.get(("fc5", "noise", 0.5, 0))


def test_counts_survive_the_file_field_by_field(tmp_path):
    c = Counts(n=300, top1=123.33333333333333, top5=290.0, loss_sum=math.nan)
    s = CellStore(tmp_path / "o.csv", FP)
    s.put([(("a",), counts_to_json(c))])
    back = counts_from_json(CellStore(tmp_path / "o.csv", FP).get(("a",)))
    assert (back.n, back.top1, back.top5) == (c.n, c.top1, c.top5) and math.isnan(back.loss_sum)
    assert back.metrics()["top1"] == c.metrics()["top1"]


def test_exact_fractions_survive_the_file(tmp_path):
    from fractions import Fraction

    from netperturb.core.resume import _dec, _enc

    big = Fraction(2**80 + 1, 3**40)
    s = CellStore(tmp_path / "o.csv", FP)
    s.put([(("f",), {"top1": _enc(big), "n": 3})])
    back = CellStore(tmp_path / "o.csv", FP).get(("f",))
    assert _dec(back["top1"]) == big and type(_dec(back["top1"])) is Fraction and back["n"] == 3


def test_torn_last_line_is_dropped_and_cut_off_before_the_next_append(tmp_path, caplog):
    out = tmp_path / "job.csv"
    s = CellStore(out, FP)
    s.put([((i,), value(i)) for i in range(3)])
    good = partial_path(out).read_bytes()
    torn = b'{"key":[3],"value":{"i":3,"x":0.'
    with open(partial_path(out), "ab") as f:  # a kill in the middle of writing cell 3
        f.write(torn)
    with caplog.at_level(logging.WARNING, logger="netperturb"):
        r = CellStore(out, FP)
    assert "torn last line" in caplog.text and f"dropped {len(torn)} bytes" in caplog.text
    assert len(r) == 3 and (3,) not in r
    assert partial_path(out).read_bytes() == good  # truncated to the whole lines
    r.put([((3,), value(3))])
    assert len(CellStore(out, FP)) == 4


def test_unreadable_line_drops_it_and_everything_after(tmp_path, caplog):
    out = tmp_path / "job.csv"
    CellStore(out, FP).put([((i,), value(i)) for i in range(2)])
    with open(partial_path(out), "ab") as f:
        f.write(b"garbage\n" + json.dumps({"key": [5], "value": 1}).encode() + b"\n")
    with caplog.at_level(logging.WARNING, logger="netperturb"):
        r = CellStore(out, FP)
    assert "unreadable line" in caplog.text and len(r) == 2 and (5,) not in r


def test_partial_file_of_other_settings_is_discarded(tmp_path, caplog):
    out = tmp_path / "job.csv"
    CellStore(out, FP).put([((0,), 1)])
    with caplog.at_level(logging.WARNING, logger="netperturb"):
        r = CellStore(out, {**FP, "weights": "def456"})
    assert "weights differ" in caplog.text and "1 cells are not reused" in caplog.text
    assert len(r) == 0 and not partial_path(out).exists()


def test_notes_persist_and_disabled_store_writes_nothing(tmp_path):
    out = tmp_path / "job.csv"
    s = CellStore(out, FP)
    s.note(replicas=8)
    s.note(replicas=8)  # unchanged: not written again
    assert CellStore(out, FP).notes == {"replicas": 8}
    assert len(partial_path(out).read_text().splitlines()) == 2
    off = CellStore(tmp_path / "off.csv", FP, enabled=False)
    assert off.compute((1,), lambda: 5) == 5 and off.computed == 1
    off.finish(pd.DataFrame({"a": [1]}))
    assert not partial_path(tmp_path / "off.csv").exists() and (tmp_path / "off.csv").exists()


CHILD = textwrap.dedent(
    """
    import sys, time
    from netperturb.core.resume import CellStore
    from test_resume import FP, value
    s = CellStore(sys.argv[1], FP)
    for i in range(int(sys.argv[2])):
        s.compute((i, 0.5 * i), lambda: (time.sleep(0.05), value(i))[1])
    """
)


def table(store: CellStore, n: int) -> pd.DataFrame:
    return pd.DataFrame([store.compute((i, 0.5 * i), lambda: value(i)) for i in range(n)])


def test_sigkill_at_a_random_point_then_resume_gives_the_uninterrupted_table(tmp_path, caplog):
    n = 40
    ref = tmp_path / "ref.csv"
    s = CellStore(ref, FP)
    s.finish(table(s, n))
    rng = random.Random(os.getpid())
    for trial in range(2):
        out = tmp_path / f"out{trial}.csv"
        stop = rng.randrange(1, n - 1)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), *sys.path])}
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(n)], env=env)
        part = partial_path(out)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if part.exists() and part.read_text().count("\n") > stop:
                break
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="netperturb"):
            r = CellStore(out, FP)
            r.finish(table(r, n))
        assert out.read_bytes() == ref.read_bytes(), trial
        assert not part.exists()
        assert 0 < r.reused < n and r.reused + r.computed == n
        assert f"{r.reused} cells reused from an interrupted run, {r.computed} computed" in caplog.text
