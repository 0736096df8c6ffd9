"""Issue 27, the cases that need the workflow: inputs checked against what made them, merges against
the plan, merged tables against their record, a read-only folder, two configs in one run folder.

Each test copies one finished run of a tiny cheney2017 config (made once per module) and damages it
as the issue's table describes; each ends with no wrong number in any merged table or report, and
with a message naming the file and the remedy. Before: cases 1-4 ended with rc 0 and a wrong table or
report, case 13 with a Snakemake-internal EROFS traceback, case 14 with the first study's report no
longer linked and its config replaced."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import job_counts, run_snakemake as run

CONFIG = {
    "run": "dmg",
    "seed": 3,
    "studies": ["cheney2017"],
    "models": {"lenet5": {"arch": "lenet5", "train": {"epochs": 1}, "layers": ["conv1", "fc5"]}},
    "cheney2017": {"repeats": 2, "batch_size": 540, "perturbations": {"gaussian_noise": {"levels": [0.0, 1.0]}}},
}
RUN = Path("results/dmg")
STUDY = RUN / "cheney2017"
MERGED = STUDY / "perturbation.csv"
REPORT = STUDY / "report" / "cheney2017.html"
JOB = STUDY / "runs" / "lenet5" / "gaussian_noise" / "layers_1of1.csv"  # conv1 and fc5 in one job
OUTPUTS = [MERGED, STUDY / "perturbation.parquet", STUDY / "baseline.csv", REPORT, RUN / "index.html"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    d = tmp_path_factory.mktemp("finished")
    (d / "tiny.yaml").write_text(yaml.safe_dump(CONFIG))
    run(d)
    return d


@pytest.fixture
def workdir(finished, tmp_path):
    d = tmp_path / "w"
    shutil.copytree(finished, d, symlinks=True)
    return d


def _snapshot(d: Path) -> dict[Path, bytes]:
    return {p: (d / p).read_bytes() for p in OUTPUTS}


def _out(r: subprocess.CompletedProcess) -> str:
    return r.stdout + r.stderr


def _logs(d: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((d / "logs").rglob("*.log")))


def _rerun_job(d: Path) -> dict[Path, bytes]:
    """Delete one per-job table and the merged tables (with their records), so that the next run
    reruns that job and the merge; returns the other outputs (report, index) as they are."""
    for p in [JOB, *(STUDY / f for f in ("perturbation.csv", "perturbation.parquet", "baseline.csv"))]:
        (d / p).unlink()
        Path(f"{d / p}.sha256").unlink(missing_ok=True)
    return {p: (d / p).read_bytes() for p in (REPORT, RUN / "index.html")}


@pytest.mark.workflow
def test_case1_a_shard_of_another_split_stops_the_job_naming_the_file(workdir):
    from netperturb.core.io import torch_save
    from netperturb.datasets.shards import load_split

    shards = workdir / "resources" / "data" / "digits" / "shards"
    x, y = load_split(shards, "train")
    torch_save({"images": x[:540].clone(), "labels": y[:540].clone()}, shards / "test-00000.pt")  # same count
    before = _rerun_job(workdir)  # its job runs again (every other table and the baseline are kept)
    r = run(workdir, check=False)
    assert r.returncode != 0
    log = (workdir / "logs" / "dmg" / "cheney2017" / "perturb" / "lenet5" / "gaussian_noise" / "layers_1of1.log").read_text()
    assert "resources/data/digits/shards/test-00000.pt: sha256 " in log and "rm -r resources/data/digits/shards" in log
    assert not (workdir / JOB).exists() and not (workdir / MERGED).exists()
    # no merged table or report was made from it: the merge never ran
    assert all((workdir / p).read_bytes() == b for p, b in before.items())


@pytest.mark.workflow
def test_case2_a_job_table_cut_off_mid_row_is_not_merged(workdir):
    data = (workdir / JOB).read_bytes()
    (workdir / JOB).write_bytes(data[: len(data) - 40])  # mid-row, newer than the merged table
    report = (workdir / REPORT).read_bytes()
    r = run(workdir, check=False)
    assert r.returncode != 0
    log = (workdir / "logs" / "dmg" / "cheney2017" / "merge.log").read_text()
    assert f"{JOB}: ends in the middle of a row (cut off at " in log
    assert f"Remedy: delete the tables named (rm {JOB})" in log
    assert not (workdir / MERGED).exists() and (workdir / REPORT).read_bytes() == report  # nothing merged
    # the remedy
    (workdir / JOB).unlink()
    r = run(workdir)
    assert job_counts(_out(r)).get("cheney2017_perturb") == 1
    df = pd.read_csv(workdir / MERGED)
    assert len(df) == 2 * 2 * 2 and df[["weights", "data_digest", "precision"]].notna().all().all()


@pytest.mark.workflow
def test_case3_a_checkpoint_replaced_by_another_trainings_is_not_mixed_into_the_table(workdir, tmp_path):
    from netperturb.models.train import train_model

    other = tmp_path / "other"
    train_model(workdir / "resources" / "data" / "digits" / "shards", "lenet5", {"epochs": 1, "seed": 1},
                other / "lenet5.pt", other / "lenet5.csv", model_name="lenet5", study="t")  # fmt: skip
    ckpt = workdir / RUN / "models" / "lenet5.pt"
    # older than every table (newer than the shards it was trained on): Snakemake reruns nothing for it
    old = os.stat(ckpt).st_mtime_ns
    for suffix in ("", ".sha256"):
        shutil.copyfile(f"{other / 'lenet5.pt'}{suffix}", f"{ckpt}{suffix}")
    os.utime(ckpt, ns=(old, old))  # its record (copied with it) still matches its bytes: not damaged
    _rerun_job(workdir)  # one job runs again, with the other checkpoint
    r = run(workdir, check=False)
    assert r.returncode != 0, _out(r)[-3000:]
    assert "train" not in job_counts(_out(r))
    log = (workdir / "logs" / "dmg" / "cheney2017" / "merge.log").read_text()
    assert "model lenet5: 2 weights ids: " in log and f"({JOB})" in log and "nothing was merged" in log
    assert not (workdir / MERGED).exists()


@pytest.mark.workflow
def test_case4_a_merged_table_edited_by_hand_stops_the_report(workdir):
    before = _snapshot(workdir)
    df = pd.read_csv(workdir / MERGED)
    df.loc[0, "top1"] = 0.99
    df.to_csv(workdir / MERGED, index=False)
    for args in (["-n"], []):
        r = run(workdir, *args, check=False)
        assert r.returncode != 0
        out = _out(r)
        assert f"{MERGED} was changed after its merge wrote it: sha256 " in out, out[-3000:]
        assert f"Remedy: delete it (rm {MERGED} {MERGED}.sha256) and run the same command again" in out
        assert "Nothing was run and no output was deleted." in out
    assert all((workdir / p).read_bytes() == b for p, b in before.items() if p != MERGED)  # the report kept
    # the remedy: the merge writes the table again from the per-job tables
    (workdir / MERGED).unlink()
    (workdir / f"{MERGED}.sha256").unlink()
    r = run(workdir)
    assert job_counts(_out(r)).get("cheney2017_merge") == 1
    assert (workdir / MERGED).read_bytes() == before[MERGED]


def _read_only(folder: Path) -> str | None:
    """Make ``folder`` read-only: a read-only bind mount (root), else chmod a-w. Returns how, or None."""
    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0:
            if subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True).returncode == 0:
                return "mount"
            subprocess.run(["umount", str(folder)], capture_output=True)
        return None
    folder.chmod(0o555)
    return "chmod"


@pytest.mark.workflow
def test_case13_a_read_only_folder_is_named_before_any_job(workdir):
    folder = workdir / JOB.parent
    _rerun_job(workdir)
    how = _read_only(folder)
    if how is None:
        pytest.skip("cannot make a folder read-only here")
    try:
        r = run(workdir, check=False)
        out = _out(r)
        assert r.returncode != 0
        assert "cannot write where the jobs to run write their outputs:" in out, out[-3000:]
        assert f"{JOB.parent} (" in out and f"): {JOB}" in out and "Nothing was run." in out
    finally:
        if how == "mount":
            subprocess.run(["umount", str(folder)], capture_output=True)
        else:
            folder.chmod(0o755)
    r = run(workdir)  # writable again: the same command finishes the run
    assert job_counts(_out(r)).get("cheney2017_perturb") == 1


@pytest.mark.workflow
def test_case14_a_second_config_joins_the_run_and_a_contradicting_one_is_refused(workdir):
    faults = {"run": "dmg", "seed": 3, "studies": ["faults"],
              "models": {"lenet5": {"arch": "lenet5", "train": {"epochs": 1}}},
              "faults": {"layers": ["fc5"], "repeats": 1, "batch_size": 540, "report": {"compare_rate": 1.0e-3},
                         "perturbations": {"fp32_word": {"fault": "bit_flip", "levels": [0.0, 1.0e-3]}}}}  # fmt: skip
    (workdir / "faults.yaml").write_text(yaml.safe_dump(faults))
    before = _snapshot(workdir)
    ckpt = (workdir / RUN / "models" / "lenet5.pt").read_bytes()
    r = run(workdir, config="faults.yaml")
    assert "train" not in job_counts(_out(r))  # the same model: the checkpoint is shared, not retrained
    index = (workdir / RUN / "index.html").read_text()
    # both studies listed, each with its own config; the first study's outputs untouched
    assert 'href="cheney2017/report/cheney2017.html"' in index and 'href="faults/report/faults.html"' in index
    assert 'href="cheney2017/config.yaml"' in index and 'href="faults/config.yaml"' in index
    assert yaml.safe_load((workdir / STUDY / "config.yaml").read_text())["studies"] == ["cheney2017"]
    assert yaml.safe_load((workdir / RUN / "faults" / "config.yaml").read_text())["studies"] == ["faults"]
    assert all((workdir / p).read_bytes() == b for p, b in before.items() if p != RUN / "index.html")
    # a third config trains lenet5 otherwise: refused before any job, naming both files and the key
    other = {**faults, "models": {"lenet5": {"arch": "lenet5", "train": {"epochs": 2}}}}
    (workdir / "other.yaml").write_text(yaml.safe_dump(other))
    for args in (["-n"], []):
        r = run(workdir, *args, config="other.yaml", check=False)
        out = _out(r)
        assert r.returncode != 0
        assert f"run 'dmg': {RUN}/ holds the outputs of another config (" in out, out[-3000:]
        assert "faults.yaml" in out and "which this one (other.yaml) contradicts" in out
        assert "models.lenet5.train.epochs: 1 there, 2 here" in out
        assert "Remedy: give this config another run name (run: dmg-2, say)" in out
    assert (workdir / RUN / "models" / "lenet5.pt").read_bytes() == ckpt
