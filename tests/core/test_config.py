"""Config validation: a bad key stops the run with a message that names it."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netperturb.core.config import ConfigError, config_errors, expand_levels
from netperturb.models.select import resolve_layers

REPO = Path(__file__).resolve().parents[2]

SCHEMA = REPO / "config" / "schema.yaml"


@pytest.fixture
def default_config():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_default_config_is_valid(default_config):
    assert config_errors(default_config, SCHEMA) == []


@pytest.mark.parametrize(
    "edit,expected",
    [
        (lambda c: c["cheney2017"]["perturbations"]["synapse_knockout"].update(levels=[0, 0.5, 1.5]),
         "cheney2017.perturbations.synapse_knockout.levels[2]: 1.5 is greater than the maximum of 1"),
        (lambda c: c["cheney2017"]["perturbations"]["node_knockout"].update(levels={"start": 0, "stop": 1.2, "step": 0.1}),
         "cheney2017.perturbations.node_knockout.levels.stop: 1.2 is greater than the maximum of 1"),
        (lambda c: c["cheney2017"]["perturbations"].update(dropout={"levels": [0.1]}),
         "cheney2017.perturbations: Additional properties are not allowed ('dropout' was unexpected)"),
        (lambda c: c["cheney2017"].update(repeats=-1), "cheney2017.repeats: -1 is less than the minimum of 1"),
        (lambda c: c["models"]["lenet5"]["train"].update(epochs=0), "models.lenet5.train.epochs: 0 is less than the minimum of 1"),
        (lambda c: c.update(device="gpu"), "device: 'gpu' does not match"),
    ],
)  # fmt: skip
def test_bad_values_name_their_key(default_config, edit, expected):
    cfg = copy.deepcopy(default_config)
    edit(cfg)
    errors = config_errors(cfg, SCHEMA)
    assert any(e.startswith(expected) for e in errors), errors


def test_unknown_layer_names_the_key():
    with pytest.raises(ConfigError, match=r"cheney2017.layers \(model 'm'\): layer 'conv9' matches no"):
        resolve_layers("m", {"arch": "lenet5"}, ["conv9"], num_classes=10, in_channels=1, key="cheney2017.layers")
    with pytest.raises(ConfigError, match="models.m.arch: unknown model 'lenet6'"):
        resolve_layers("m", {"arch": "lenet6"}, "all", num_classes=10, in_channels=1, key="cheney2017.layers")


def test_expand_levels():
    assert expand_levels({"start": 0, "stop": 1, "step": 0.1}) == [round(0.1 * i, 10) for i in range(11)]
    assert expand_levels({"start": 0, "stop": 2, "step": 0.2})[-1] == 2.0
    assert expand_levels([0.5, 0]) == [0.5, 0.0]
    with pytest.raises(ConfigError, match="duplicate"):
        expand_levels([0.1, 0.1])


def test_snakemake_refuses_bad_config_before_any_job(tmp_path, default_config):
    cfg = copy.deepcopy(default_config)
    cfg["cheney2017"]["perturbations"]["synapse_knockout"]["levels"] = [0, 1.5]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    snakemake = Path(sys.executable).parent / "snakemake"
    r = subprocess.run([str(snakemake), "-s", str(REPO / "Snakefile"), "--configfile", "bad.yaml", "-n", "--cores", "1"],
                       cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0
    assert "cheney2017.perturbations.synapse_knockout.levels[1]: 1.5 is greater than the maximum of 1" in r.stdout + r.stderr
    assert not (tmp_path / "results").exists()
