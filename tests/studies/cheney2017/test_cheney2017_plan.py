"""The Cheney et al. 2017 grid's plan (netperturb.studies.cheney2017.plan): one job per model x
perturbation x part of the layers, levels from the config, errors that name the key."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from netperturb.core.config import ConfigError
from netperturb.studies.cheney2017.plan import plan_grid

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def config():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(cfg, str(REPO / "config" / "schema.yaml"))  # fills the defaults
    return cfg


def test_default_grid(config):
    plan = plan_grid(config, num_classes=10, in_channels=1)
    assert {m: len(v) for m, v in plan.layers.items()} == {"lenet5": 5, "alexnet_digits": 8}
    assert plan.levels["synapse_knockout"] == pytest.approx([i / 10 for i in range(11)])
    assert plan.levels["gaussian_noise"][-1] == pytest.approx(2.0) and len(plan.levels["gaussian_noise"]) == 11
    tables = plan.job_tables("results/digits/cheney2017")
    # layers_per_job null: every layer of a model in one job, 2 models x 3 perturbations
    assert len(tables) == len(set(tables)) == 2 * 3
    assert "results/digits/cheney2017/runs/lenet5/node_knockout/layers_1of1.csv" in tables
    cells = plan.job_cells("r", 5)["r/runs/lenet5/node_knockout/layers_1of1.csv"]
    paths = [la.path for la in plan.layers["lenet5"]]
    assert cells == [[p, lv, r] for p in paths for lv in plan.levels["node_knockout"] for r in range(5)]


def test_layers_per_job_splits_a_models_layers_in_depth_order(config):
    cfg = copy.deepcopy(config)
    cfg["cheney2017"]["layers_per_job"] = 3
    plan = plan_grid(cfg, num_classes=10, in_channels=1)
    paths = [la.path for la in plan.layers["alexnet_digits"]]
    assert plan.parts["alexnet_digits"] == {"1of3": paths[:3], "2of3": paths[3:6], "3of3": paths[6:]}
    assert list(plan.parts["lenet5"]) == ["1of2", "2of2"]
    cells = plan.job_cells("r", 5)
    assert len(cells) == (3 + 2) * 3
    # the same cells in all as one job per model: the split changes only which job computes them
    whole = plan_grid(config, num_classes=10, in_channels=1).job_cells("r", 5)
    assert sorted(map(tuple, sum(cells.values(), []))) == sorted(map(tuple, sum(whole.values(), [])))
    # the findings' extra repeats (focus) in every part
    (lv, n) = plan.focus["synapse_knockout"]
    part = cells["r/runs/alexnet_digits/synapse_knockout/layers_3of3.csv"]
    assert sum(1 for p, level, r in part if level == lv) == len(paths[6:]) * n


def test_a_models_own_layers_win_and_errors_name_the_key(config):
    cfg = copy.deepcopy(config)
    cfg["models"]["alexnet_digits"]["layers"] = ["conv1", "fc8"]
    plan = plan_grid(cfg, num_classes=10, in_channels=1)
    assert [la.label for la in plan.layers["alexnet_digits"]] == ["conv1", "fc8"]
    cfg["models"]["alexnet_digits"]["layers"] = ["conv9"]
    with pytest.raises(ConfigError, match=r"^models\.alexnet_digits\.layers"):
        plan_grid(cfg, num_classes=10, in_channels=1)
    cfg = copy.deepcopy(config)
    cfg["cheney2017"]["layers"] = ["nolayer*"]
    with pytest.raises(ConfigError, match=r"^cheney2017\.layers"):
        plan_grid(cfg, num_classes=10, in_channels=1)
    cfg = copy.deepcopy(config)
    cfg["cheney2017"]["perturbations"]["node_knockout"]["levels"] = {"start": 0.5, "stop": 0.1, "step": 0.1}
    with pytest.raises(ConfigError, match=r"cheney2017\.perturbations\.node_knockout\.levels"):
        plan_grid(cfg, num_classes=10, in_channels=1)
