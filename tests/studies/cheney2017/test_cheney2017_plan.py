"""The Cheney et al. 2017 grid's plan (netperturb.studies.cheney2017.plan): one job per model x
layer x perturbation, levels from the config, errors that name the key."""

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
    assert len(tables) == len(set(tables)) == (5 + 8) * 3
    assert "results/digits/cheney2017/runs/lenet5/node_knockout/features.0.csv" in tables


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
