"""Cell-level resume of a Cheney et al. perturbation job (issue 13, item 3): a job stopped after
some cells and started again computes only the missing cells and writes the same CSV, byte
for byte, as an uninterrupted run."""

from __future__ import annotations

import logging

import pytest

from netperturb.core.context import RunContext
from netperturb.core.resume import partial_path
from netperturb.studies.cheney2017 import jobs
from resume_kill import Killed, kill_after, reuse_message, stored_cells


CTX = dict(run="cheney2017", dataset="digits", model="lenet5", study_seed=7, batch_size=128, device="cpu", progress=False)

CASES = {
    # fast engine, 2 replicas per group: level-0 cells, group (0.5 r0, 0.5 r1), group (1.0 r0) + its copy (1.0 r1)
    "fast-synapse": dict(layer="fc5", perturbation="synapse_knockout", options={"levels": [0.0, 0.5, 1.0]},
                         engine="fast", max_replicas=2),
    "functional-noise": dict(layer="conv2", perturbation="gaussian_noise", options={"levels": [0.0, 0.5, 1.0]},
                             engine="functional"),
    "naive-node": dict(layer="conv1", perturbation="node_knockout", options={"levels": [0.0, 0.5]}, engine="naive"),
}  # fmt: skip


def perturb_layer(checkpoint, shards, out, batch_size=128, **kw):
    """The job with the run context of these tests (a smaller ``batch_size`` for one case)."""
    ctx = RunContext(shard_dir=str(shards), model_file=str(checkpoint), **{**CTX, "batch_size": batch_size})
    return jobs.perturb_layer(ctx, out, repeats=2, **kw)


@pytest.mark.parametrize("case", list(CASES))
def test_resumed_job_writes_the_uninterrupted_csv(lenet_checkpoint, digits_shards, tmp_path, monkeypatch, caplog, case):
    kw = CASES[case]
    ref = tmp_path / "ref.csv"
    perturb_layer(lenet_checkpoint, digits_shards, ref, **kw)
    assert not partial_path(ref).exists()  # removed once the CSV is written
    n_cells = len(kw["options"]["levels"]) * 2
    for stop in (1, 2):
        out = tmp_path / f"{case}-{stop}.csv"
        with monkeypatch.context() as m:
            kill_after(m, stop)
            with pytest.raises(Killed):
                perturb_layer(lenet_checkpoint, digits_shards, out, **kw)
        assert not out.exists() and partial_path(out).exists()
        stored = stored_cells(partial_path(out))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="netperturb"):
            perturb_layer(lenet_checkpoint, digits_shards, out, **kw)
        assert out.read_bytes() == ref.read_bytes()
        assert not partial_path(out).exists()
        assert reuse_message(caplog).endswith(f"{stored} cells reused from an interrupted run, {n_cells - stored} computed")
        assert 0 < stored < n_cells


def test_partial_file_of_other_settings_is_not_reused(lenet_checkpoint, digits_shards, tmp_path, monkeypatch, caplog):
    kw = CASES["functional-noise"]
    out = tmp_path / "out.csv"
    with monkeypatch.context() as m:
        kill_after(m, 2)
        with pytest.raises(Killed):
            perturb_layer(lenet_checkpoint, digits_shards, out, **{**kw, "batch_size": 50})
    with caplog.at_level(logging.INFO, logger="netperturb"):
        perturb_layer(lenet_checkpoint, digits_shards, out, **kw)
    assert "batch_size differ" in caplog.text
    assert "0 cells reused from an interrupted run, 6 computed" in caplog.text
    ref = tmp_path / "ref.csv"
    perturb_layer(lenet_checkpoint, digits_shards, ref, **kw)
    assert out.read_bytes() == ref.read_bytes()
