"""A damaged input the workflow made earlier stops the run while the jobs are planned, names the
file and the remedy, and deletes nothing; the remedy remakes it (issue 13, item 7). Before the
fix the truncated checkpoint (newer than every table) made Snakemake delete the valid per-job
tables of the jobs it then reran, which failed on the checkpoint."""

from __future__ import annotations

import os

import pytest
import yaml

from conftest import job_counts, run_snakemake as run

CONFIG = {
    "run": "dmg",
    "seed": 3,
    "studies": ["cheney2017"],
    "models": {"lenet5": {"arch": "lenet5", "train": {"epochs": 1}, "layers": ["conv1", "fc5"]}},
    "cheney2017": {"repeats": 1, "batch_size": 360, "layers_per_job": 1,  # two per-job tables
                   "perturbations": {"gaussian_noise": {"levels": [0.0, 1.0]}}},
}
TARGET = "results/dmg/cheney2017/perturbation.csv"


@pytest.mark.workflow
def test_a_truncated_checkpoint_stops_the_run_before_any_job_and_the_remedy_remakes_it(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(CONFIG))
    run(tmp_path, TARGET)
    ckpt = tmp_path / "results" / "dmg" / "models" / "lenet5.pt"
    tables = sorted((tmp_path / "results" / "dmg" / "cheney2017" / "runs").rglob("*.csv"))
    assert len(tables) == 2 and (tmp_path / f"{ckpt}.sha256").exists()
    before = {p: p.read_bytes() for p in [*tables, tmp_path / TARGET, ckpt]}

    # truncated later: its mtime is now newer than every table, so Snakemake would rerun (and
    # first delete) all of them; the check in the input function stops it while planning
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])
    for args in (["-n"], []):
        r = run(tmp_path, TARGET, *args, check=False)
        out = r.stdout + r.stderr
        assert r.returncode != 0, out[-3000:]
        assert "damaged input results/dmg/models/lenet5.pt (model lenet5)" in out, out[-3000:]
        assert "Remedy: made by the train rule: delete it (rm results/dmg/models/lenet5.pt results/dmg/models/lenet5.pt.sha256)" in out
        assert "or at once with results/dmg/models/lenet5.pt as the target" in out
        assert "Nothing was run and no output was deleted." in out
    assert all(p.read_bytes() == b for p, b in before.items() if p != ckpt), "a valid table was deleted or changed"

    # the remedy: delete it; every table is complete, so no job needs it ("Nothing to be
    # done", nothing lost); with it as the target, train makes it again: the same bytes (same seed)
    os.remove(ckpt)
    os.remove(f"{ckpt}.sha256")
    r = run(tmp_path, TARGET)
    assert "Nothing to be done" in r.stdout + r.stderr
    r = run(tmp_path, "results/dmg/models/lenet5.pt")
    assert job_counts(r.stdout + r.stderr).get("train") == 1
    assert ckpt.read_bytes() == before[ckpt] and (tmp_path / f"{ckpt}.sha256").exists()
