"""Every model source and every data kind through the workflow (issue 23): the cheney2017 grid
and the faults study from a config, on tiny files the test makes itself.

Run A: an image folder with train/ and test/ (1-channel 8 x 8 PNGs, 0..255) and four models: one
trained here (netperturb), one python factory + safetensors state_dict, one TorchScript file,
one torch.export program. Run B: a tensor file (3-channel 32 x 32, 1,000 classes) and a
torchvision classifier with a local weights file and a timm architecture with a state_dict.
One layer, two levels, one repeat each: about 19 + 11 jobs."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import job_counts, run_snakemake
from netperturb.core.io import sha256_file
from source_files import REPO, mynet_files, png_folder

GRID = {
    "cheney2017": {"layers": ["conv1"], "repeats": 1, "batch_size": 64,
                   "perturbations": {"synapse_knockout": {"levels": [0.0, 0.5]}}},
    "faults": {"layers": ["conv1"], "repeats": 1, "batch_size": 64, "report": {"compare_rate": 0.01},
               "perturbations": {"fp32_word": {"fault": "bit_flip", "format": "fp32", "levels": [0.0, 0.01]}}},
}  # fmt: skip
TARGETS = ["results/tiny/cheney2017/perturbation.csv", "results/tiny/faults/perturbation.csv"]


def _run(workdir: Path, cfg: dict):
    (workdir / "tiny.yaml").write_text(yaml.safe_dump({"run": "tiny", "seed": 7, "studies": ["cheney2017", "faults"],
                                                       **cfg, **GRID}))  # fmt: skip
    r = run_snakemake(workdir, *TARGETS)
    return job_counts(r.stdout + r.stderr)


def _tables(workdir: Path):
    res = workdir / "results" / "tiny"
    return (pd.read_csv(res / "cheney2017" / "perturbation.csv"), pd.read_csv(res / "cheney2017" / "baseline.csv"),
            pd.read_csv(res / "faults" / "perturbation.csv"), pd.read_csv(res / "faults" / "baseline.csv", keep_default_na=False))  # fmt: skip


def _level_zero_is_the_clean_model(grid, base, flips, fbase):
    for m, row in base.set_index("model").iterrows():
        zero = grid[(grid["model"] == m) & (grid["level"] == 0)]
        assert len(zero) == 1 and zero[["top1", "top5", "loss"]].iloc[0].tolist() == [row["top1"], row["top5"], row["loss"]]
        fz = flips[(flips["model"] == m) & (flips["level"] == 0)]
        f0 = fbase[(fbase["model"] == m) & (fbase["reference"] == "fp32")].iloc[0]
        assert fz["top1"].tolist() == [f0["top1"]] == [row["top1"]]
        # no silent data corruption at level 0 (undefined, NaN, when the clean network gets no image right)
        assert (fz["sdc1"] == 0).all() or (fz["sdc1"].isna().all() and row["top1"] == 0)


@pytest.mark.workflow
def test_file_sources_and_a_trained_model_on_an_image_folder(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    png_folder(tmp_path / "digits", {"train": list(range(0, 120)), "test": list(range(1200, 1260))})
    files = mynet_files(tmp_path / "nets")
    models = {
        "trained": {"arch": "lenet5", "train": {"epochs": 1}},
        "py": {"source": "python", "factory": "examples.mynet:make_mynet", "kwargs": {"in_channels": 1},
               "weights_file": str(files["safetensors"])},
        "ts": {"source": "torchscript", "file": str(files["torchscript"])},
        "ex": {"source": "exported", "file": str(files["exported"])},
    }  # fmt: skip
    counts = _run(tmp_path, {"dataset": {"kind": "image_folder", "root": "digits", "channels": 1}, "models": models})
    # one prepare job, one train job (models given as files are never trained), 4 models x 2 studies x 2 jobs
    assert counts["prepare_data_source"] == 1 and counts["train"] == 1, counts
    assert counts["cheney2017_perturb"] == counts["cheney2017_baseline"] == counts["faults_perturb"] == 4, counts
    grid, base, flips, fbase = _tables(tmp_path)
    assert sorted(base["model"]) == ["ex", "py", "trained", "ts"] and set(grid["dataset"]) == {"digits"}
    assert (grid["n_images"] == 60).all() and (grid["layer"] == "features.0").all()
    _level_zero_is_the_clean_model(grid, base, flips, fbase)
    weights = base.set_index("model")["weights"]
    for m, kind in (("py", "safetensors"), ("ts", "torchscript"), ("ex", "exported")):
        assert weights[m] == sha256_file(files[kind])[:12]
    # the same network from three sources: the same clean numbers, bit for bit
    assert base.set_index("model").loc[["py", "ts", "ex"], ["top1", "top5", "loss"]].nunique().tolist() == [1, 1, 1]
    assert weights["trained"] == sha256_file(tmp_path / "results/tiny/models/trained.pt")[:12]
    assert base.set_index("model").loc["trained", "arch"] == "lenet5"
    # the highest rate of bit flips changes something in every model (the cells are not vacuous)
    top = flips[flips["level"] == 0.01]
    assert (top["loss"].values != fbase.set_index("model").loc[top["model"], "loss"].values).all()


@pytest.mark.workflow
def test_pretrained_sources_on_a_tensor_file(tmp_path):
    import timm
    import torchvision
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    torch.save({"images": torch.from_numpy(rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8)),
                "labels": torch.from_numpy(rng.integers(0, 1000, 12))}, tmp_path / "imgs.pt")  # fmt: skip
    torch.manual_seed(0)
    tv = tmp_path / "mnv3.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), tv)
    named = tmp_path / f"mobilenet_v3_small-{sha256_file(tv)[:8]}.pth"  # torch hub's rule: the sha256 prefix in the name
    tv.rename(named)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_file(timm.create_model("test_resnet", num_classes=1000).state_dict(), str(tmp_path / "timm.safetensors"))
    models = {
        "tv": {"arch": "mobilenet_v3_small", "weights": "IMAGENET1K_V1", "weights_file": str(named),
               "preprocess": {"input_size": 32}},
        "tm": {"source": "timm", "arch": "test_resnet", "weights_file": str(tmp_path / "timm.safetensors"),
               "preprocess": {"input_size": 32}},
    }  # fmt: skip
    counts = _run(tmp_path, {"dataset": {"kind": "tensors", "path": "imgs.pt", "num_classes": 1000}, "models": models})
    assert counts["prepare_data_source"] == 1 and "train" not in counts and "download_weights" not in counts, counts
    assert counts["cheney2017_perturb"] == counts["faults_perturb"] == 2, counts
    grid, base, flips, fbase = _tables(tmp_path)
    assert set(grid["dataset"]) == {"imgs"} and (grid["n_images"] == 12).all()
    assert grid.groupby("model")["layer"].first().to_dict() == {"tm": "conv1.0", "tv": "features.0.0"}
    _level_zero_is_the_clean_model(grid, base, flips, fbase)
    weights = base.set_index("model")["weights"]
    assert weights["tv"] == f"IMAGENET1K_V1@{sha256_file(named)[:12]}"
    assert weights["tm"] == sha256_file(tmp_path / "timm.safetensors")[:12]
    assert base.set_index("model").loc["tm", "arch"] == "test_resnet"
