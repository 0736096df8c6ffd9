"""Config problems stop `snakemake -n` before any job, with a message naming the file or key
(issue 13: 4, 5, 6)."""

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
