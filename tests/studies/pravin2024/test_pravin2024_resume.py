"""Cell-level resume of the filtering sweeps (issue 13, item 3): a sweep job stopped after some
points and started again evaluates only the missing points and writes the same CSV, byte for
byte, as an uninterrupted run."""

from __future__ import annotations

import logging

import pytest

from netperturb.core.resume import partial_path
from netperturb.studies.pravin2024.evaluator import AttackSpec
from netperturb.studies.pravin2024.jobs import sweep_layers, sweep_network
from resume_kill import Killed, kill_after, reuse_message, stored_cells

KW = dict(init=0, epoch=1, filters=["low", "pulse"], steps=3, attack=AttackSpec(eps=0.1), n_images=30)


def _ctx(checkpoint, shards):
    """The run context these sweeps share (model m, digits, study seed 7, batches of 16)."""
    from netperturb.core.context import RunContext

    return RunContext(run="s", dataset="digits", shard_dir=str(shards), model="m", model_file=str(checkpoint),
                      study_seed=7, batch_size=16, device="cpu", progress=False)  # fmt: skip

JOBS = {
    # two layers in one job: the unfiltered network (empty zero set) of fc5 comes from the
    # evaluator's cache, filled by conv1's sweep; after a resume it comes from the partial file
    "layers": (sweep_layers, dict(layers=["conv1", "fc5"]), 2 * 2 * 3),
    "network": (sweep_network, dict(layers="all", grid=None), 2 * 3),
}


@pytest.mark.parametrize("job", list(JOBS))
def test_resumed_sweep_writes_the_uninterrupted_csv(lenet_checkpoint, digits_shards, tmp_path, monkeypatch, caplog, job):
    fn, extra, points = JOBS[job]
    ref = tmp_path / "ref.csv"
    fn(_ctx(lenet_checkpoint, digits_shards), ref, **KW, **extra)
    assert not partial_path(ref).exists()
    for stop in (points // 2 + 1, points - 1):
        out = tmp_path / f"{job}-{stop}.csv"
        with monkeypatch.context() as m:
            kill_after(m, stop)
            with pytest.raises(Killed):
                fn(_ctx(lenet_checkpoint, digits_shards), out, **KW, **extra)
        stored = stored_cells(partial_path(out))
        assert not out.exists() and 0 < stored < points
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="netperturb"):
            fn(_ctx(lenet_checkpoint, digits_shards), out, **KW, **extra)
        assert out.read_bytes() == ref.read_bytes()
        assert not partial_path(out).exists()
        assert reuse_message(caplog).endswith(f"{stored} cells reused from an interrupted run, {points - stored} computed")
