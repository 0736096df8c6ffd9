"""Config validation: a bad key stops the run with a message that names it."""

import copy
import re
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


# issue 13.4: names that become folders cannot leave results/
@pytest.mark.parametrize("edit,key", [
    (lambda c: c.update(run=".."), "run"),
    (lambda c: c.update(run="."), "run"),
    (lambda c: c.update(run="../elsewhere"), "run"),
    (lambda c: c["models"].update({"..": {"arch": "lenet5"}}), "models key '..'"),
    (lambda c: c["pravin2024"]["models"].update({".hidden": {"arch": "lenet5"}}), "pravin2024.models key '.hidden'"),
])  # fmt: skip
def test_names_that_leave_results_are_refused(default_config, edit, key):
    from netperturb.core.config import check_names

    cfg = copy.deepcopy(default_config)
    edit(cfg)
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: '.*' is not a usable name; it becomes a folder under results/"):
        check_names(cfg)
    assert config_errors(cfg, SCHEMA) != []  # the schema refuses them too


def test_usual_names_pass(default_config):
    from netperturb.core.config import check_names

    cfg = copy.deepcopy(default_config)
    cfg.update(run="paper_v1.2-a")
    cfg["models"].update({"resnet50": {"arch": "resnet50"}, "_x.y-z": {"arch": "lenet5"}})
    check_names(cfg)
    assert config_errors(cfg, SCHEMA) == []


# issue 13.5: a key written twice is refused, naming the file, the key and both lines
def test_duplicate_key_names_file_key_and_both_lines(tmp_path):
    from netperturb.core.config import check_config_files, load_config_file

    f = tmp_path / "run.yaml"
    f.write_text("run: a\ncheney2017:\n  repeats: 1\nmodels:\n  m: {arch: lenet5}\ncheney2017:\n  repeats: 5\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(f))}: line 6: key 'cheney2017' is given twice \(first at line 2\)"):
        load_config_file(f)
    g = tmp_path / "nested.yaml"
    g.write_text("models:\n  m:\n    arch: lenet5\n    arch: alexnet_digits\n")
    with pytest.raises(ConfigError, match=r"nested.yaml: line 4: key 'arch' is given twice \(first at line 3\)"):
        check_config_files([tmp_path / "missing.yaml", g])
    # the same key in different mappings, and YAML merge keys, are fine
    h = tmp_path / "ok.yaml"
    h.write_text("a: &d {x: 1, y: 2}\nb:\n  <<: *d\n  x: 3\nc: {x: 1}\n")
    assert load_config_file(h) == {"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 2}, "c": {"x": 1}}


def test_every_shipped_config_loads_strictly():
    from netperturb.core.config import check_config_files

    check_config_files(sorted((REPO / "config").glob("*.yaml")))


# issue 13.9: invalid YAML names the file and the line
def test_invalid_yaml_names_file_and_line(tmp_path):
    from netperturb.core.config import load_config_file

    f = tmp_path / "bad.yaml"
    f.write_text("run: x\nmodels:\n  a: [1,\n  b: 2\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(f))}: line 5, column 1: not valid YAML: .*"
                                          r"\(the construct starts at line 3, column 6\)"):
        load_config_file(f)
    f.write_text("run: x\n  models: 1\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(f))}: line 2, column 9: not valid YAML: mapping values"):
        load_config_file(f)


# issue 13.6: non-finite levels and an empty list
@pytest.mark.parametrize("spec", [[0, float("inf")], [float("nan")], {"start": 0, "stop": float("inf"), "step": 0.1}])
def test_non_finite_levels_name_the_key(spec):
    with pytest.raises(ConfigError, match=r"^cheney2017.perturbations.gaussian_noise.levels: levels must be finite numbers"):
        expand_levels(spec, key="cheney2017.perturbations.gaussian_noise.levels")


def test_empty_level_list_names_the_key(default_config):
    with pytest.raises(ConfigError, match="^k.levels: no levels; give a list of at least one level"):
        expand_levels([], key="k.levels")
    cfg = copy.deepcopy(default_config)
    cfg["cheney2017"]["perturbations"]["synapse_knockout"]["levels"] = []
    assert "cheney2017.perturbations.synapse_knockout.levels: an empty list; give at least 1 item(s)" in config_errors(cfg, SCHEMA)
