"""The pravin2024 study end to end on a tiny config, and the default config's plan."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from netperturb.studies.pravin2024.scores import SCORE_COLUMNS
from netperturb.studies.pravin2024.sweeps import SWEEP_COLUMNS
from netperturb.studies.pravin2024.jobs import RETRAIN_COLUMNS

from conftest import job_counts, run_snakemake as run

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")

# the tiny config of this study (runnable by hand too)
TINY = yaml.safe_load((REPO / ".test" / "config_pravin2024" / "config.yaml").read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("wf_pravin")
    (d / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    run(d)
    return d


@pytest.mark.workflow
def test_tables(workdir):
    res = workdir / "results" / "tinyf" / "pravin2024"
    sw = pd.read_csv(res / "sweeps.csv", keep_default_na=False, na_values=["NaN", "nan"])
    assert list(sw.columns) == SWEEP_COLUMNS
    # 2 checkpoints x (2 layers + whole network) x 3 filters x 5 thresholds x (clean, adversarial)
    assert len(sw) == 2 * 3 * 3 * 5 * 2
    assert sorted(sw["epoch"].unique()) == [1, 2] and set(sw["mode"]) == {"layer", "network"}
    assert (sw["n_images"] == 48).all() and sw["top1"].between(0, 1).all()
    assert pd.read_parquet(res / "sweeps.parquet").shape == sw.shape
    base = pd.read_csv(res / "baseline.csv", keep_default_na=False, na_values=["NaN", "nan"])
    assert len(base) == 2 * 2 and set(base["mode"]) == {"none"}
    # the sweeps' fully filtered conv1 (every weight zero) is the same network for both step filters
    end = sw[(sw["layer_label"] == "conv1") & (sw["position"] == 1.0) & sw["perturbation"].isin(["filter_low", "filter_high"])]
    assert end.groupby(["epoch", "data"])["top1"].nunique().eq(1).all()
    sc = pd.read_csv(res / "scores.csv", keep_default_na=False, na_values=["NaN", "nan"])
    assert list(sc.columns) == SCORE_COLUMNS
    assert len(sc) == 2 * 3 * 3 * 3 and set(sc["class"]) == {"robust"}
    diff = sc.pivot_table(index=["epoch", "layer", "filter"], columns="score", values="value")
    assert (diff["difference"] - (diff["adversarial"] - diff["clean"])).abs().max() < 1e-12
    rt = pd.read_csv(res / "retraining.csv", keep_default_na=False, na_values=["NaN", "nan"])
    assert list(rt.columns) == RETRAIN_COLUMNS and list(rt["strategy"].unique()) == ["none", "selective", "full"]
    sel = rt[rt["strategy"] == "selective"].iloc[0]
    assert sel["layers_trained"] == "conv1,fc5" and sel["epoch"] == 2 and sel["n_params_trained"] == 6 * 25 + 6 + 84 * 10 + 10


@pytest.mark.workflow
def test_report(workdir):
    rep = workdir / "results" / "tinyf" / "pravin2024" / "report"
    html = (rep / "pravin2024.html").read_text()
    assert "Filtering scores" in html and "Selective retraining" in html and "<img" in html
    figs = {p.name for p in (rep / "figures").iterdir()}
    assert {"lenet5_layers_epoch1.png", "lenet5_layers_epoch2.png", "lenet5_network.png", "lenet5_scores.png",
            "lenet5_classes.png", "lenet5_scores.pdf"} <= figs  # fmt: skip
    assert {p.name for p in (rep / "tables").iterdir()} >= {"retraining.csv", "classes.csv", "fully_filtered.csv"}


@pytest.mark.workflow
def test_rerun_does_nothing_and_a_lost_sweep_is_recomputed_alone(workdir):
    r = run(workdir, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr
    res = workdir / "results" / "tinyf" / "pravin2024"
    # the state a run killed during the sweeps leaves: one sweep's table never written
    # (outputs are atomic), nothing merged or scored yet
    lost = res / "runs" / "lenet5" / "init0" / "epoch1" / "layers_2of2.csv"  # fc5 (classifier.4)
    before = pd.read_csv(lost)
    for p in (lost, res / "sweeps.csv", res / "sweeps.parquet", res / "baseline.csv", res / "scores.csv"):
        p.unlink()
    r = run(workdir, "--until", "pravin2024_scores")  # (retraining and report would follow)
    counts = job_counts(r.stdout + r.stderr)
    assert counts.get("pravin2024_sweep_layers") == 1 and counts.get("pravin2024_scores") == 1, counts
    assert "pravin2024_train_lenet5" not in counts and "pravin2024_baseline" not in counts, counts
    assert pd.read_csv(lost).equals(before)  # deterministic: the same numbers again
    assert set(before["layer"]) == {"classifier.4"}


@pytest.mark.workflow
def test_default_config_plans_the_study():
    r = subprocess.run([SNAKEMAKE, "-n", "--cores", "2", "--quiet", "rules", "--forceall"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    counts = job_counts(r.stdout + r.stderr)
    # ResNet-18: its 21 conv/linear layers in one job per checkpoint (layers_per_job: null), 2
    # checkpoints; the whole network at each checkpoint
    assert counts.get("pravin2024_sweep_layers") == 2 and counts.get("pravin2024_sweep_network") == 2, counts
    assert counts.get("pravin2024_train_resnet18") == 1 and counts.get("pravin2024_report") == 1, counts


@pytest.mark.workflow
def test_layers_per_job_splits_the_sweeps_of_a_checkpoint(tmp_path):
    (tmp_path / "parts.yaml").write_text(yaml.safe_dump({"pravin2024": {"layers_per_job": 8}}))
    r = subprocess.run([SNAKEMAKE, "-n", "--cores", "2", "--forceall", "--configfile", "config/config.yaml",
                        str(tmp_path / "parts.yaml"), "--config", "studies=[pravin2024]"],
                       cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    # 21 layers in parts of 8, 8 and 5, per checkpoint
    assert job_counts(out).get("pravin2024_sweep_layers") == 6, job_counts(out)
    for e in (2, 4):
        assert all(f"epoch{e}/layers_{k}of3.csv" in out for k in (1, 2, 3))


@pytest.mark.workflow
def test_bad_keys_name_the_key(tmp_path):
    bad = {**TINY, "pravin2024": {**TINY["pravin2024"], "retraining": {"checkpoint": 7}}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(bad))
    r = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--configfile", "tiny.yaml", "-n"], cwd=tmp_path,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0 and "pravin2024.retraining.checkpoint: epoch 7" in r.stdout + r.stderr
    bad = {**TINY, "pravin2024": {**TINY["pravin2024"], "filters": ["lowpass"]}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(bad))
    r = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--configfile", "tiny.yaml", "-n"], cwd=tmp_path,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0 and "pravin2024.filters[0]" in r.stdout + r.stderr
    bad = {**TINY, "pravin2024": {**TINY["pravin2024"], "max_replicas": 0}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(bad))
    r = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--configfile", "tiny.yaml", "-n"], cwd=tmp_path,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0 and "pravin2024.max_replicas" in r.stdout + r.stderr
