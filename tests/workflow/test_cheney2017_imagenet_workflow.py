"""The paper rules end to end on tiny official-format ImageNet archives and a random AlexNet
served by a file:// URL; and the real paper config's plan."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from imagenet_archives import CORRUPT, make_alexnet_weights, make_archives, sorted_index, val_name

from netperturb.datasets.shards import load_split, read_manifest
from netperturb.perturb.grid import COLUMNS

from conftest import job_counts, run_snakemake

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
KEY = "resize256-crop224-bilinear"
LEVELS = {"synapse_knockout": [0.0, 1.0], "node_knockout": [0.0, 0.5], "gaussian_noise": [0.0, 1.0]}


def snakemake(workdir: Path, config: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, config=config, check=check)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("paper")
    archives = make_archives(d / "archives")
    weights = make_alexnet_weights(d / "served")
    config = {
        "run": "tinypaper",
        "seed": 3,
        "dataset": "imagenet",
        "datasets": {"imagenet": {
            "val_tar": str(archives["val_tar"]), "devkit": str(archives["devkit"]), "verify_checksums": False,
            "shard_size": 5, "max_bad_fraction": 0.1, "threads": 2,
        }},
        "models": {"alexnet": {"arch": "alexnet", "weights": "IMAGENET1K_V1", "weights_url": weights.as_uri(),
                               "layers": ["fc8"]}},
        "cheney2017": {"repeats": 2, "batch_size": 4, "resources": {"gpu": 1},
                       "perturbations": {p: {"levels": lv} for p, lv in LEVELS.items()},
                       "report": {"metric": "top5"}},
    }  # fmt: skip
    (d / "tiny_paper.yaml").write_text(yaml.safe_dump(config))
    r = snakemake(d, "tiny_paper.yaml")
    return d, weights, archives, r


@pytest.mark.workflow
def test_paper_rules_end_to_end(paper_run):
    d, weights, archives, r = paper_run
    counts = job_counts(r.stdout + r.stderr)
    assert counts.get("download_weights") == 1 and counts.get("prepare_imagenet") == 1, counts
    assert counts.get("cheney2017_perturb") == 3 and counts.get("cheney2017_baseline") == 1 and "train" not in counts, counts
    # the weights: fetched from the file:// URL under the name that carries its hash
    fetched = d / "resources" / "weights" / weights.name
    assert fetched.read_bytes() == weights.read_bytes()
    # the shards of the AlexNet transform
    shards = d / "resources" / "data" / "imagenet" / KEY / "shards"
    m = read_manifest(shards)
    assert [s["file"] for s in m["skipped"]] == [val_name(CORRUPT)]
    _, y = load_split(shards, "val")
    expected = [i for i in range(1, 13) if i != CORRUPT]
    assert y.tolist() == [sorted_index(i) for i in expected]
    # the grid
    res = d / "results" / "tinypaper" / "cheney2017"
    df = pd.read_csv(res / "perturbation.csv")
    assert list(df.columns) == COLUMNS
    assert len(df) == sum(len(v) for v in LEVELS.values()) * 2
    assert set(df["layer"]) == {"classifier.6"} and set(df["layer_label"]) == {"fc8"}
    assert (df["n_images"] == 11).all() and (df["dataset"] == "imagenet").all() and (df["arch"] == "alexnet").all()
    prefix = weights.stem.split("-")[1]
    assert df["weights"].str.startswith(f"IMAGENET1K_V1@{prefix}").all()
    base = pd.read_csv(res / "baseline.csv", keep_default_na=False).set_index("model")
    for metric in ("top1", "top5", "loss"):
        assert (df.loc[df["level"] == 0, metric] == base.loc["alexnet", metric]).all()
    # the same numbers from the library directly: the random net's clean top-5 on these 11 images
    from netperturb.core.evaluate import evaluate
    from netperturb.models.weights import load_pretrained

    loaded = load_pretrained(fetched, "alexnet", "IMAGENET1K_V1")
    x, y = load_split(shards, "val")
    counts = evaluate(loaded.model, x, y, loaded.preprocess, batch_size=11).metrics()
    assert counts["top5"] == pytest.approx(base.loc["alexnet", "top5"], abs=1e-12)
    # fc8 with every weight and bias removed: all logits equal, tie-aware top-5 = 5/1000
    full = df[(df["perturbation"] == "synapse_knockout") & (df["level"] == 1.0) & (df["layer_label"] == "fc8")]
    assert len(full) == 2 and (full["top5"] - 0.005).abs().max() < 1e-12
    # the report: top-5 figures, top-1 variants, and the (flagged) check against torchvision's numbers
    rep = res / "report"
    figs = {p.name for p in (rep / "figures").iterdir()}
    assert {"alexnet_top5.png", "alexnet_top1.png", "alexnet_top5.pdf"} <= figs
    check = pd.read_csv(rep / "tables" / "baseline_check.csv")
    assert check["top1_published"].tolist() == pytest.approx([0.56522]) and check["flagged"].tolist() == [True]
    html = (rep / "cheney2017.html").read_text()
    assert "FLAGGED: alexnet differs from the published accuracy" in html and "a subset of the images" in html


@pytest.mark.workflow
def test_a_weights_file_with_a_wrong_hash_fails_naming_the_url(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    wrong = served / "alexnet-0badc0de.pth"  # the name promises a sha256 these bytes do not have
    wrong.write_bytes(b"x" * 1000)
    config = {"run": "wrong", "dataset": "imagenet",
              "models": {"alexnet": {"arch": "alexnet", "weights": "IMAGENET1K_V1", "weights_url": wrong.as_uri()}}}  # fmt: skip
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(config))
    r = snakemake(tmp_path, "wrong.yaml", "resources/weights/alexnet-0badc0de.pth", check=False)
    assert r.returncode != 0
    log = (tmp_path / "logs" / "weights" / "alexnet-0badc0de.pth.log").read_text()
    assert f"could not fetch {wrong.as_uri()}" in log and 'expected "0badc0de"' in log
    out = tmp_path / "resources" / "weights"
    assert not out.exists() or not any(out.iterdir())  # no file, no .partial


@pytest.mark.workflow
def test_the_paper_config_plans_the_full_grid_without_imagenet(tmp_path):
    # config/cheney2017-imagenet.yaml as it is (the acceptance command `snakemake --configfile
    # config/cheney2017-imagenet.yaml -n`), plus one more torchvision classifier added by its name
    paper = yaml.safe_load((REPO / "config" / "cheney2017-imagenet.yaml").read_text())
    paper["models"]["inception_v3"] = {"arch": "inception_v3", "weights": "IMAGENET1K_V1", "layers": ["fc*"]}
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(paper))
    r = snakemake(tmp_path, "paper.yaml", "-n", "--quiet", "rules")
    counts = job_counts(r.stdout + r.stderr)
    # AlexNet 5 conv + 3 dense, VGG16 13 conv + 3 dense (72 jobs) + Inception v3's fc; x 3
    # perturbations; AlexNet and VGG16 share one shard set, Inception v3 (342/299) has its own
    assert counts == {"download_weights": 3, "prepare_imagenet": 2, "cheney2017_baseline": 3, "cheney2017_perturb": 72 + 3,
                      "cheney2017_merge": 1, "cheney2017_report": 1, "index": 1, "all": 1, "total": 87}, counts  # fmt: skip
