"""The shen2021 study through Snakemake on tiny MNIST idx files (the real loader), with the
study's dataset set in its own section (the top-level dataset stays digits)."""

import gzip
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from netperturb.perturb.grid import COLUMNS

from conftest import run_snakemake as run

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")

# the tiny config of this study (runnable by hand too)
TINY = yaml.safe_load((REPO / ".test" / "config_shen2021" / "config.yaml").read_text())
N_TRAIN, N_TEST = 64, 20  # 4 steps per epoch at batch 16
N_RUNS = 4
N_KERNELS = 6 + 16 + 120 + 84 + 10
N_READINGS = 3  # current, init_bound, trajectory (shen2021.interval's default)
N_SEEDS = 2  # one shuffled-label control run per seed; every run also tracks its driftless walk


def _write_idx(path: Path, array: np.ndarray) -> None:
    """LeCun's idx format (as the MNIST files): magic 0x0008 <ndim>, big-endian dims, uint8 data, gzipped."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(str(path) + ".gz", "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mmwf")
    rng = np.random.default_rng(0)
    raw = d / "mnist"
    raw.mkdir()
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        # images whose brightest row encodes the label, so the net learns something
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, 28, 28))
        x[np.arange(n), 2 + 2 * y] = 255
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    cfg = {**TINY, "datasets": {"mnist": {"root": str(raw), "verify_checksums": False}}}
    (d / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    run(d)
    return d


@pytest.mark.workflow
def test_every_run_trained_tracked_attacked_and_perturbed(workdir):
    mm = workdir / "results" / "mm" / "shen2021"
    runs = sorted(p.name for p in (mm / "runs").iterdir())
    assert runs == ["lam0_seed0", "lam0_seed1", "lam2_seed0", "lam2_seed1", "shuffled_seed0", "shuffled_seed1"]
    for r in runs:
        assert (mm / "runs" / r / "model.pt").exists()
    hist = pd.read_csv(mm / "history.csv")
    assert len(hist) == N_RUNS * 3 and set(hist["dataset"]) == {"mnist"} and hist["reg_fuzziness"].notna().all()
    controls = pd.read_csv(mm / "control_history.csv")
    assert len(controls) == N_SEEDS * 3 and set(controls["control"]) == {"shuffled labels"}
    track = pd.read_parquet(mm / "tracking.parquet")
    # snapshots: init, steps 1 and 2 of epoch 1 (fractions 0.25, 0.5 of 4 steps), every epoch end
    assert sorted(track["epoch"].unique()) == [0, 0.25, 0.5, 1, 2]
    # every run and its driftless walk, and each seed's shuffled-label run
    assert len(track) == (2 * N_RUNS + N_SEEDS) * 5 * N_READINGS * (5 + N_KERNELS)
    assert track.groupby("control")["model"].nunique().to_dict() == {
        "none": N_RUNS, "driftless walk": N_RUNS, "shuffled labels": N_SEEDS}
    assert set(track["interval"]) == {"current", "init_bound", "trajectory"}
    # the trajectory reading is undefined at initialisation (no weight has a range yet), defined after
    traj = track[(track["interval"] == "trajectory") & (track["scope"] == "layer")]
    assert traj[traj["epoch"] == 0]["fuzziness"].isna().all() and traj[traj["epoch"] > 0]["fuzziness"].notna().all()
    # per run and merged, the two large tables are Parquet only
    assert sum(len(pd.read_parquet(mm / "runs" / r / "tracking.parquet")) for r in runs) == len(track)
    assert not list(mm.rglob("tracking.csv")) and not list(mm.rglob("histograms.csv"))
    h = pd.read_parquet(mm / "histograms.parquet")
    assert len(h) == (N_RUNS + N_SEEDS) * 5 * 5 * N_READINGS * 2 * 8
    defined = h[~((h["interval"] == "trajectory") & (h["epoch"] == 0))]
    assert (defined.groupby(["model", "epoch", "layer", "interval", "scope"])["fraction"].sum().round(12) == 1).all()
    rob = pd.read_csv(mm / "robustness.csv")
    assert len(rob) == N_RUNS * 2 * 2 and (rob["n_images"] == N_TEST).all()
    final = hist[hist["epoch"] == 2].set_index("model")["test_top1"]
    clean = rob[rob["eps"] == 0]
    assert np.allclose(clean["top1"].to_numpy(), final.loc[clean["model"]].to_numpy())
    pert = pd.read_csv(mm / "perturbation.csv")
    assert list(pert.columns[: len(COLUMNS)]) == COLUMNS
    assert len(pert) == N_RUNS * (1 + 2 * 2 * 2 * 2)
    for model, g in pert.groupby("model"):
        none = g[g["perturbation"] == "none"]["top1"].iloc[0]
        assert (g[g["level"] == 0]["top1"] == none).all()
        assert none == pytest.approx(final.loc[model])
    # every lambda of one seed meets the same perturbation draws
    s = pert[pert["perturbation"] != "none"].pivot_table(index=["train_seed", "layer", "perturbation", "level", "repeat"], columns="lam", values="seed")
    assert (s[0.0] == s[2.0]).all()


@pytest.mark.workflow
def test_report_renders_and_a_rerun_does_nothing(workdir):
    rep = workdir / "results" / "mm" / "shen2021" / "report"
    html = (rep / "shen2021.html").read_text()
    assert "Does fuzziness fall over training" in html and "Pearson" in html and "<img" in html
    figs = {p.name for p in (rep / "figures").iterdir()}
    for name in ("histogram_evolution_layer", "fuzziness_vs_epoch_layer", "robust_vs_eps", "fuzziness_vs_robust", "perturbation_by_lambda"):
        assert {f"{name}.png", f"{name}.pdf"} <= figs, figs
    corr = pd.read_csv(rep / "tables" / "fuzziness_robust_correlation.csv")
    assert set(corr["attack"]) == {"fgsm", "pgd"} and (corr[corr["subset"] == "all runs"]["n"] == N_RUNS).all()
    change = pd.read_csv(rep / "tables" / "fuzziness_change_layer.csv")
    assert len(change) == 2 * 5 and (change["n_seeds"] == 2).all()
    assert change["F0_mean"].between(0, math.log(2)).all()
    readings = pd.read_csv(rep / "tables" / "fuzziness_change_readings.csv")
    assert readings["interval"].drop_duplicates().tolist() == ["current", "init_bound", "trajectory"]
    # per reading: trained and driftless walk per lambda (2 x 5 layers each), shuffled labels (5 layers)
    assert len(readings) == N_READINGS * (2 * 2 * 5 + 5) and readings["Fend_mean"].between(0, math.log(2)).all()
    assert readings.groupby("control").size().to_dict() == {
        "none": N_READINGS * 2 * 5, "driftless walk": N_READINGS * 2 * 5, "shuffled labels": N_READINGS * 5}
    found = pd.read_csv(rep / "tables" / "findings.csv")
    assert found["claim"].str.contains("1/sqrt(fan_in)", regex=False).sum() == 1 and found["claim"].str.contains("own range").sum() == 1
    assert "The verdict depends on what" in html
    r = run(workdir, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr


@pytest.mark.workflow
def test_the_paper_scale_config_validates_and_plans_every_run(tmp_path):
    """config/shen2021-mnist.yaml as it is (`snakemake -n`): one training, attack and perturbation
    job per lambda x seed. Its MNIST folder (datasets.mnist.root, resources/raw/mnist) must exist
    before any job, dry run included (issue 27): an empty one stands for it, and without it the
    dry run stops naming the key."""
    from conftest import job_counts

    r = run(tmp_path, "-n", config=str(REPO / "config" / "shen2021-mnist.yaml"), check=False)
    assert r.returncode != 0 and "invalid config: datasets.mnist.root: resources/raw/mnist does not exist" in r.stdout + r.stderr
    (tmp_path / "resources" / "raw" / "mnist").mkdir(parents=True)
    cfg = yaml.safe_load((REPO / "config" / "shen2021-mnist.yaml").read_text())
    counts = job_counts(run(tmp_path, "-n", config=str(REPO / "config" / "shen2021-mnist.yaml")).stdout)
    n_runs = len(cfg["shen2021"]["lambdas"]) * len(cfg["shen2021"]["seeds"])
    assert n_runs == 20
    assert counts["shen2021_train"] == counts["shen2021_evaluate"] == n_runs, counts
