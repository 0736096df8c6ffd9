"""Config problems stop `snakemake -n` before any job, with a message naming the file or key
(issue 13: 4, 5, 6; issue 27: 5-9)."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _dry_run(tmp_path, text):
    (tmp_path / "run.yaml").write_text(text)
    snakemake = Path(sys.executable).parent / "snakemake"
    r = subprocess.run([str(snakemake), "-s", str(REPO / "Snakefile"), "--configfile", "run.yaml", "-n", "--cores", "1"],
                       cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0
    assert not (tmp_path / "results").exists()
    return r.stdout + r.stderr


def _default():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_duplicate_key_stops_the_run(tmp_path):
    cfg = _default()
    text = yaml.safe_dump(cfg, sort_keys=False) + "cheney2017:\n  repeats: 1\n"
    line = 1 + next(i for i, l in enumerate(text.splitlines()) if l.startswith("cheney2017:"))
    last = len(text.splitlines())
    out = _dry_run(tmp_path, text)
    assert f"run.yaml: line {last - 1}: key 'cheney2017' is given twice (first at line {line})" in out


@pytest.mark.parametrize("edit,message", [
    (lambda c: c.update(run=".."), "run: '..' is not a usable name; it becomes a folder under results/"),
    (lambda c: c["models"].update({"..": {"arch": "lenet5"}}), "models key '..': '..' is not a usable name"),
    (lambda c: c["cheney2017"]["perturbations"]["gaussian_noise"].update(levels=[0, float("inf")]),
     "cheney2017.perturbations.gaussian_noise.levels: levels must be finite numbers, got inf"),
])  # fmt: skip
def test_bad_names_and_levels_stop_the_run(tmp_path, edit, message):
    cfg = _default()
    edit(cfg)
    assert message in _dry_run(tmp_path, yaml.safe_dump(cfg, sort_keys=False))


# Issue 27: every config error at planning, and `netperturb check-config` refusing exactly what the
# workflow refuses (one code path, netperturb.runconfig). Before: a missing datasets.mnist.root passed
# the dry run (the prepare job failed naming the folder, "message: None"); a 300-character run name
# and a seed of 2^64 + 5 passed validation (the train job died, the study seed was stored rounded);
# check-config said "ok" to all three and to a config that is a YAML list.
TINY = {"run": "t", "studies": ["cheney2017"], "models": {"lenet5": {"arch": "lenet5", "train": {"epochs": 1}}}}


def _check_config(tmp_path, monkeypatch, capsys, *args):
    from netperturb import cli

    monkeypatch.chdir(tmp_path)
    rc = cli.main(["check-config", *args])
    out = capsys.readouterr()
    return rc, out.out + out.err


@pytest.mark.workflow
@pytest.mark.parametrize("case,edit,message", [
    ("5", lambda c: c.update(studies=["shen2021"], shen2021={"dataset": "mnist"}, datasets={"mnist": {"root": "no/mnist"}}),
     "datasets.mnist.root: no/mnist does not exist (looked for no/mnist); it must be the folder with the MNIST idx files"),
    ("5-unset", lambda c: c.update(studies=["shen2021"], shen2021={"dataset": "mnist"}),
     "datasets.mnist.root: not set; dataset 'mnist' is prepared from a folder with the MNIST idx files"),
    ("6", lambda c: c.update(run="r" * 300),
     "run: a name of 300 bytes ('rrrrrrrrrrrrrrrrrrrr'...) is too long; it becomes a folder or file name, and this file "
     "system takes 255 bytes per name, of which netperturb needs 32 for its own suffixes: use at most 223 bytes"),
    ("7-train", lambda c: c["models"]["lenet5"]["train"].update(seed=2**64 + 5),
     "models.lenet5.train.seed: 18446744073709551621 is greater than the maximum of 9223372036854775807"),
    ("7-study", lambda c: c.update(seed=2**64 + 5), "seed: 18446744073709551621 is greater than the maximum of 9223372036854775807"),
])  # fmt: skip
def test_config_errors_stop_the_dry_run_and_check_config_alike(tmp_path, monkeypatch, capsys, case, edit, message):
    cfg = copy.deepcopy(TINY)
    edit(cfg)
    text = yaml.safe_dump(cfg, sort_keys=False)
    out = _dry_run(tmp_path, text)
    assert f"invalid config: {message}" in out or message in out, out[-3000:]
    rc, said = _check_config(tmp_path, monkeypatch, capsys, "run.yaml")
    assert rc == 2 and message in said and "ok:" not in said, said


def test_a_config_that_is_a_list_is_named_by_check_config_and_where(tmp_path, monkeypatch, capsys):
    (tmp_path / "run.yaml").write_text("- run: t\n- studies: [cheney2017]\n")
    message = ("run.yaml: the top level of a config file must be a mapping of keys (run:, studies:, models:, ...), "
               "this one is a list (YAML lines starting with -); see config/config.yaml for the layout")  # fmt: skip
    rc, said = _check_config(tmp_path, monkeypatch, capsys, "run.yaml")
    assert rc == 2 and message in said
    from netperturb import cli

    assert cli.main(["where", "--configfile", "run.yaml"]) == 2  # before: AttributeError
    assert message in capsys.readouterr().err


@pytest.mark.workflow
def test_a_section_given_with_config_parses_as_in_the_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(TINY))
    snakemake = Path(sys.executable).parent / "snakemake"
    r = subprocess.run([str(snakemake), "-s", str(REPO / "Snakefile"), "--configfile", "run.yaml", "-n", "--cores", "1",
                        "--config", 'cheney2017={"repeats": 3}'], cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]  # before: "'3' is not of type 'integer'"
    rc, said = _check_config(tmp_path, monkeypatch, capsys, "run.yaml", "--config", 'cheney2017={"repeats": 3}')
    assert rc == 0 and said.startswith("ok: run.yaml: run 't'")
    rc, said = _check_config(tmp_path, monkeypatch, capsys, "run.yaml", "--config", 'cheney2017={"repeats": 0}')
    assert rc == 2 and "cheney2017.repeats: 0 is less than the minimum of 1" in said
