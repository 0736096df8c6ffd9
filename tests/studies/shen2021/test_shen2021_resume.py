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


def test_evaluate_run_killed_in_the_grid_keeps_every_attack_cell(lenet_checkpoint, digits_shards, tmp_path, monkeypatch,
                                                                  caplog):  # fmt: skip
    """shen2021_evaluate writes the attack table, then the grid's. Snakemake deletes both outputs
    of a failed job, so the attack's cells must survive a failure in the grid: the rerun
    computes no attack cell and writes both tables byte-identical to an uninterrupted run."""
    from netperturb.studies.shen2021.jobs import evaluate_run

    attacks = {"methods": ["fgsm", "pgd"], "eps": [0.0, 0.1], "pgd_steps": 2}
    perturbation = {"perturbations": PERTURBATIONS, "layers": ["fc5"], "repeats": 2}
    n_attack, n_grid = JOBS["attack"][2], JOBS["perturb"][2]
    ref_rob, ref_pert = tmp_path / "ref_rob.csv", tmp_path / "ref_pert.csv"
    evaluate_run(_ctx(lenet_checkpoint, digits_shards), ref_rob, ref_pert, **RUN, attacks=attacks, perturbation=perturbation)
    assert not partial_path(ref_rob).exists() and not partial_path(ref_pert).exists()
    rob, pert = tmp_path / "rob.csv", tmp_path / "pert.csv"
    with monkeypatch.context() as m:
        kill_after(m, n_attack + 2)  # every attack cell, then 2 appends of grid cells
        with pytest.raises(Killed):
            evaluate_run(_ctx(lenet_checkpoint, digits_shards), rob, pert, **RUN, attacks=attacks, perturbation=perturbation)
    assert rob.exists() and not pert.exists()
    rob.unlink()  # what Snakemake does with the outputs of a failed job
    assert stored_cells(partial_path(rob)) == n_attack
    stored = stored_cells(partial_path(pert))
    assert 0 < stored < n_grid
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="netperturb"):
        evaluate_run(_ctx(lenet_checkpoint, digits_shards), rob, pert, **RUN, attacks=attacks, perturbation=perturbation)
    assert rob.read_bytes() == ref_rob.read_bytes() and pert.read_bytes() == ref_pert.read_bytes()
    assert not partial_path(rob).exists() and not partial_path(pert).exists()
    messages = [r.getMessage() for r in caplog.records if "cells reused" in r.getMessage()]
    assert messages[0].endswith(f"{n_attack} cells reused from an interrupted run, 0 computed"), messages
    assert messages[1].endswith(f"{stored} cells reused from an interrupted run, {n_grid - stored} computed"), messages
