"""The hardware-fault study end to end on a tiny config in a temporary directory."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from netperturb.core.findings import VERDICTS
from netperturb.studies.faults.jobs import FAULT_COLUMNS

from conftest import run_snakemake as run

REPO = Path(__file__).resolve().parents[2]
TINY = yaml.safe_load((REPO / ".test" / "config_faults" / "config.yaml").read_text())
N_LAYERS = len(TINY["faults"]["layers"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    (d / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    run(d)
    return d


@pytest.mark.workflow
def test_tables_columns_baselines_and_level_zero(workdir):
    res = workdir / "results" / "tiny" / "faults"
    df = pd.read_csv(res / "perturbation.csv")
    variants = TINY["faults"]["perturbations"]
    assert len(df) == N_LAYERS * TINY["faults"]["repeats"] * sum(len(v["levels"]) for v in variants.values())
    assert list(df.columns) == FAULT_COLUMNS
    assert pd.read_parquet(res / "perturbation.parquet").equals(df)
    base = pd.read_csv(res / "baseline.csv", keep_default_na=False)
    assert list(base.columns) == FAULT_COLUMNS
    assert sorted(base["reference"]) == ["fp32", "int8_channel"]
    ref = base.set_index("reference")
    # level 0 of every variant is its fault-free network bit for bit: fp32, or the quantized one
    for (variant, reference), rows in df[df["level"] == 0].groupby(["perturbation", "reference"]):
        for m in ("top1", "top5", "loss"):
            assert (rows[m] == ref.loc[reference, m]).all(), (variant, m)
        assert (rows["sdc1"] == 0).all() and (rows["due"] == 0).all()
    assert set(df.loc[df["perturbation"] == "int8_word", "reference"]) == {"int8_channel"}
    assert df[["top1", "top5", "sdc1", "due"]].stack().between(0, 1).all()
    # the highest rate really breaks the fp32 network somewhere (the grid is not vacuous)
    top = df[(df["perturbation"] == "fp32_word") & (df["level"] == 0.01)]
    assert (top["top1"] < ref.loc["fp32", "top1"] - 0.2).any()


@pytest.mark.workflow
def test_report_figures_and_findings(workdir):
    rep = workdir / "results" / "tiny" / "faults" / "report"
    html = (rep / "faults.html").read_text()
    assert "Findings" in html and "vulnerability" in html and "<img" in html
    figs = {p.name for p in (rep / "figures").iterdir()}
    for stem in ("top1", "sdc1", "vulnerability", "fp32_vs_int8", "bit_positions"):
        assert f"alexnet_digits_{stem}.png" in figs and f"alexnet_digits_{stem}.pdf" in figs
    vul = pd.read_csv(rep / "tables" / "vulnerability.csv")
    assert len(vul) == N_LAYERS * len(TINY["faults"]["perturbations"])
    found = pd.read_csv(rep / "tables" / "findings.csv")
    assert len(found) == 3 and set(found["verdict"]) <= set(VERDICTS)
    for col in ("estimate", "lo", "hi", "n", "threshold", "interval"):  # every finding with its interval
        assert col in found.columns, col
    tested = found[found["verdict"] != "not tested"]
    assert tested[["estimate", "lo", "hi"]].notna().all().all() and (tested["lo"] <= tested["hi"]).all()
    assert (workdir / "results" / "tiny" / "index.html").exists()


@pytest.mark.workflow
def test_bad_fault_options_stop_the_run_before_any_job(tmp_path):
    for spec, message in [
        ({"fault": "bit_flip", "format": "int4", "levels": [0, 0.1]}, "'int4' is not one of ['fp32', 'fp16', 'bf16', 'int8']"),
        ({"fault": "bit_flip", "bits": [40], "levels": [0, 0.1]}, "faults.perturbations.bad.bits"),
        ({"fault": "bit_flip", "levels": [0, 1.5]}, "faults.perturbations.bad.levels"),
        ({"fault": "bit_flip", "format": "fp16", "bits": [20], "levels": [0, 0.1]},
         "faults.perturbations.bad.bits: bit index 20 is outside 0..15 for fp16"),
    ]:  # fmt: skip
        cfg = yaml.safe_load(yaml.safe_dump(TINY))
        cfg["faults"]["perturbations"]["bad"] = spec
        (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
        r = run(tmp_path, "-n", check=False)
        assert r.returncode != 0 and message in r.stdout + r.stderr, (spec, (r.stdout + r.stderr)[-2000:])
        assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_the_paper_config_plans_without_imagenet(tmp_path):
    # config/faults-imagenet.yaml as it is (`snakemake --configfile config/faults-imagenet.yaml -n`)
    (tmp_path / "paper.yaml").write_text((REPO / "config" / "faults-imagenet.yaml").read_text())
    r = run(tmp_path, "-n", "--quiet", "rules", config="paper.yaml")
    from conftest import job_counts

    counts = job_counts(r.stdout + r.stderr)
    paper = yaml.safe_load((REPO / "config" / "faults-imagenet.yaml").read_text())
    n_variants = len(paper["faults"]["perturbations"])
    # AlexNet 8 layers, ResNet-50 54; references fp32, bf16, int8_channel per model; the two
    # models share ImageNet's 256/224 shards
    assert counts["faults_perturb"] == (8 + 54) * n_variants, counts
    assert counts["faults_baseline"] == 2 * 3 and counts["download_weights"] == 2, counts
    assert counts["faults_merge"] == counts["faults_report"] == 1, counts
