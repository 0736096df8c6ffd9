"""The worked example (config/examples/own-model.yaml): a user's own nn.Module with its
state_dict and a folder of 0-255 PNGs run cheney2017 and faults end to end, reports included
(the grid cut to one layer and fewer levels to keep the test short)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
import yaml

from conftest import job_counts, run_snakemake
from source_files import REPO


@pytest.mark.workflow
def test_own_model_example_end_to_end(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    from examples.make_own_model import main

    threads = torch.get_num_threads()
    try:
        top1 = main(["--out", str(tmp_path / "resources/examples/own-model"), "--epochs", "3"])
    finally:
        torch.set_num_threads(threads)
    cfg = yaml.safe_load((REPO / "config" / "examples" / "own-model.yaml").read_text())
    cfg["cheney2017"].update(layers=["conv1"], repeats=1, perturbations={"synapse_knockout": {"levels": [0.0, 0.5, 1.0]}})
    cfg["faults"].update(layers=["conv1"], repeats=1)
    for v in cfg["faults"]["perturbations"].values():
        v["levels"] = [0.0, 1.0e-3, 1.0e-2]
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(cfg))
    r = run_snakemake(tmp_path, config="own.yaml")
    counts = job_counts(r.stdout + r.stderr)
    assert "train" not in counts and counts["prepare_data_source"] == 1 and counts["index"] == 1, counts
    res = tmp_path / "results" / "own-model"
    base = pd.read_csv(res / "cheney2017" / "baseline.csv").iloc[0]
    # the user's own evaluation of their model (examples/make_own_model.py) and the workflow's agree
    assert abs(base["top1"] - top1) <= 1 / 540 and base["n_images"] == 540 and base["arch"] == "MyNet"
    manifest = json.loads((next((tmp_path / "resources" / "data").glob("digits-*/shards")) / "manifest.json").read_text())
    assert manifest["value_range"] == [0, 255] and manifest["splits"]["test"]["shape"] == [1, 8, 8]
    for study in ("cheney2017", "faults"):
        assert (res / study / "report" / f"{study}.html").stat().st_size > 0
    flips = pd.read_csv(res / "faults" / "perturbation.csv")
    assert set(flips["reference"]) == {"fp32", "int8_channel"} and len(flips) == 3 * 3
    assert (res / "index.html").exists()
