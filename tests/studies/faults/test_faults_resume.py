"""Cell-level resume of a fault job, activation faults included (issue 27): a job stopped after some
cells and started again computes only the missing cells and writes the same CSV, byte for byte,
as an uninterrupted run, as the other job kinds do (tests/studies/cheney2017/test_cheney2017_resume.py).
Before, faults_perturb had no resume: a killed job started over."""

from __future__ import annotations

import logging

import pytest

from netperturb.core.resume import partial_path
from netperturb.core.context import RunContext
from netperturb.studies.faults.jobs import perturb_layer
from resume_kill import Killed, kill_after, reuse_message, stored_cells

KW = dict(repeats=2)


def _ctx(checkpoint, shards) -> RunContext:
    return RunContext(run="faults", dataset="digits", shard_dir=str(shards), model="lenet5", model_file=str(checkpoint),
                      study_seed=7, batch_size=128, device="cpu", progress=False)  # fmt: skip

CASES = {
    # transient activation bit flips: a new pattern per image (the image index enters the seed)
    "activation-transient": dict(layer="features.3", variant="activation_word",
                                 spec={"fault": "activation_bit_flip", "transient": True, "bits": "all",
                                       "levels": [0.0, 1e-3, 1e-2]}, engine="fast", max_replicas=2),
    # a permanent activation fault (one pattern per cell), the naive reference path
    "activation-permanent": dict(layer="classifier.2", variant="activation_stuck",
                                 spec={"fault": "activation_stuck_at", "transient": False, "value": 1,
                                       "levels": [0.0, 1e-3, 1e-2]}, engine="naive"),
    # stored-weight bit flips in int8
    "weights-int8": dict(layer="classifier.4", variant="int8_word",
                         spec={"fault": "bit_flip", "format": "int8", "granularity": "channel", "levels": [0.0, 1e-3, 1e-2]},
                         engine="fast", max_replicas=2),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_killed_fault_job_resumes_to_the_uninterrupted_csv(lenet_checkpoint, digits_shards, tmp_path, monkeypatch,
                                                             caplog, case):  # fmt: skip
    kw = {**KW, **CASES[case]}
    ref = tmp_path / "ref.csv"
    perturb_layer(_ctx(lenet_checkpoint, digits_shards), ref, **kw)
    assert not partial_path(ref).exists()  # removed once the CSV is written
    n_cells = len(kw["spec"]["levels"]) * kw["repeats"]
    for stop in (1, 2):
        out = tmp_path / f"{case}-{stop}.csv"
        with monkeypatch.context() as m:
            kill_after(m, stop)
            with pytest.raises(Killed):
                perturb_layer(_ctx(lenet_checkpoint, digits_shards), out, **kw)
        assert not out.exists() and partial_path(out).exists()
        stored = stored_cells(partial_path(out))
        assert 0 < stored < n_cells
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="netperturb"):
            perturb_layer(_ctx(lenet_checkpoint, digits_shards), out, **kw)
        assert out.read_bytes() == ref.read_bytes()
        assert not partial_path(out).exists()
        assert reuse_message(caplog).endswith(f"{stored} cells reused from an interrupted run, {n_cells - stored} computed")


def test_a_partial_file_of_another_variant_is_not_reused(lenet_checkpoint, digits_shards, tmp_path, monkeypatch, caplog):
    kw = {**KW, **CASES["activation-transient"]}
    out = tmp_path / "out.csv"
    with monkeypatch.context() as m:
        kill_after(m, 1)
        with pytest.raises(Killed):
            perturb_layer(_ctx(lenet_checkpoint, digits_shards), out, **{**kw, "spec": {**kw["spec"], "bits": "exponent"}})
    with caplog.at_level(logging.INFO, logger="netperturb"):
        perturb_layer(_ctx(lenet_checkpoint, digits_shards), out, **kw)
    assert "spec differ" in caplog.text and "0 cells reused from an interrupted run, 6 computed" in caplog.text
