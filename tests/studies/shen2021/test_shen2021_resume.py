"""Cell-level resume of the Min-Max runs' attack and perturbation tables (issue 13, item 3): a
job stopped after some cells and started again computes only the missing cells and writes the
same CSV, byte for byte, as an uninterrupted run."""

from __future__ import annotations

import logging

import pytest

from netperturb.core.context import RunContext
from netperturb.core.resume import partial_path
from netperturb.studies.shen2021.jobs import attack_run, perturb_run
from resume_kill import Killed, kill_after, reuse_message, stored_cells

RUN = dict(lam=0.0, seed=0)
PERTURBATIONS = {"node_knockout": {"levels": [0, 0.5]}, "gaussian_noise": {"levels": [0, 1]}}

JOBS = {
    "attack": (attack_run, dict(attacks=["fgsm", "pgd"], eps_values=[0.0, 0.1], pgd_steps=2), 4),
    # the clean row + 1 layer x 2 perturbations x 2 levels x 2 repeats
    "perturb": (perturb_run, dict(perturbations=PERTURBATIONS, layers=["fc5"], repeats=2), 1 + 2 * 2 * 2),
}


def _ctx(checkpoint, shards) -> RunContext:
    return RunContext(run="shen2021", dataset="digits", shard_dir=str(shards), model_file=str(checkpoint), study_seed=5,
                      batch_size=64, device="cpu", progress=False)  # fmt: skip


@pytest.mark.parametrize("job", list(JOBS))
def test_resumed_run_table_equals_the_uninterrupted_one(lenet_checkpoint, digits_shards, tmp_path, monkeypatch, caplog, job):
    fn, extra, cells = JOBS[job]
    ref = tmp_path / "ref.csv"
    fn(_ctx(lenet_checkpoint, digits_shards), ref, **RUN, **extra)
    assert not partial_path(ref).exists()
    for stop in (2,):
        out = tmp_path / f"{job}-{stop}.csv"
        with monkeypatch.context() as m:
            kill_after(m, stop)
            with pytest.raises(Killed):
                fn(_ctx(lenet_checkpoint, digits_shards), out, **RUN, **extra)
        stored = stored_cells(partial_path(out))
        assert not out.exists() and 0 < stored < cells
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="netperturb"):
            fn(_ctx(lenet_checkpoint, digits_shards), out, **RUN, **extra)
        assert out.read_bytes() == ref.read_bytes()
        assert not partial_path(out).exists()
        assert reuse_message(caplog).endswith(f"{stored} cells reused from an interrupted run, {cells - stored} computed")
