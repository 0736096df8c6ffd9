"""One run folder, one config (issue 27, case 14): a second config joins a run folder when it agrees
with what the folder holds where their outputs meet, and is refused before any job otherwise; a
folder that cannot be written is named (case 13)."""

from __future__ import annotations

import copy
import os

import pytest

from netperturb.core.config import ConfigError
from netperturb.core.runfolder import RECORD, check_run_folder, record_run, shared_settings, unwritable_outputs

A = {"run": "tiny", "seed": 7, "dataset": "digits", "studies": ["cheney2017"],
     "models": {"lenet5": {"arch": "lenet5", "train": {"epochs": 2}},
                "alexnet_digits": {"arch": "alexnet_digits", "train": {"epochs": 1}, "layers": ["conv1", "fc8"]}},
     "cheney2017": {"repeats": 2}, "faults": {"repeats": 3}}  # fmt: skip


def _faults(**change):
    b = {"run": "tiny", "seed": 7, "dataset": "digits", "studies": ["faults"],
         "models": {"alexnet_digits": {"arch": "alexnet_digits", "train": {"epochs": 1}}},
         "cheney2017": {"repeats": 5}, "faults": {"repeats": 2}}  # fmt: skip
    b.update(change)
    return b


def test_a_second_study_on_the_same_models_joins(tmp_path):
    run = tmp_path / "results" / "tiny"
    record_run(run, A, ["a.yaml"])
    check_run_folder(run, _faults(), ["b.yaml"])  # layers and unlisted sections do not matter
    record_run(run, _faults(), ["b.yaml"])
    held = __import__("json").loads((run / RECORD).read_text())["settings"]
    assert set(held) == {"dataset", "models.lenet5", "models.alexnet_digits", "cheney2017", "faults"}  # both kept
    assert held["faults"]["files"] == [os.path.abspath("b.yaml")] and held["cheney2017"]["files"] == [os.path.abspath("a.yaml")]


@pytest.mark.parametrize("change,difference", [
    (dict(models={"alexnet_digits": {"arch": "alexnet_digits", "train": {"epochs": 3}}}),
     "models.alexnet_digits.train.epochs: 1 there, 3 here"),
    (dict(dataset="mnist"), "dataset: digits there, mnist here"),
    (dict(studies=["cheney2017"], cheney2017={"repeats": 5}), "cheney2017.repeats: 2 there, 5 here"),
    (dict(studies=["cheney2017"], seed=8, cheney2017={"repeats": 2}), "cheney2017.seed: 7 there, 8 here"),
])  # fmt: skip
def test_a_contradicting_config_is_refused_naming_both_files(tmp_path, change, difference):
    run = tmp_path / "results" / "tiny"
    record_run(run, A, ["a.yaml"])
    with pytest.raises(ConfigError) as e:
        check_run_folder(run, _faults(**change), ["b.yaml"])
    msg = str(e.value)
    assert msg.startswith(f"run 'tiny': {run}/ holds the outputs of another config (")
    assert "a.yaml" in msg and f"recorded in {run / RECORD}) which this one (b.yaml) contradicts" in msg
    assert difference in msg and "Remedy: give this config another run name (run: tiny-2, say)" in msg
    assert "Nothing was run." in msg


def test_the_same_file_edited_is_not_a_second_config(tmp_path):
    run = tmp_path / "results" / "tiny"
    record_run(run, A, ["a.yaml"])
    edited = copy.deepcopy(A)
    edited["models"]["lenet5"]["train"]["epochs"] = 5
    check_run_folder(run, edited, ["a.yaml"])  # Snakemake reruns what the edit changed
    check_run_folder(tmp_path / "results" / "other", edited, ["b.yaml"])  # no record: nothing to agree with
    assert shared_settings(edited)["models.lenet5"] == {"arch": "lenet5", "train": {"epochs": 5}}


def test_unwritable_folders_are_named(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro) else real(p, mode))
    bad = unwritable_outputs([ro / "a" / "x.csv", ro / "y.csv", tmp_path / "ok" / "z.csv"])
    assert bad == [f"{ro} (no write permission): {ro / 'a' / 'x.csv'}"]  # one line per folder, nearest existing one


def test_resources_change_no_output_so_a_config_differing_only_there_joins(tmp_path):
    """What a study's jobs ask of a scheduler (``<study>.resources``) is not where outputs meet:
    a config that only asks for another time limit joins the folder; the same config with
    another repeat count is still refused."""
    run = tmp_path / "results" / "tiny"
    a = copy.deepcopy(A)
    a["cheney2017"]["resources"] = {"runtime": 30, "gpu": 1}
    record_run(run, a, ["a.yaml"])
    b = copy.deepcopy(A)
    b["cheney2017"]["resources"] = {"runtime": 1, "gpu": 1, "mem_mb": 9000}
    check_run_folder(run, b, ["b.yaml"])
    assert shared_settings(b)["cheney2017"] == {"seed": 7, "section": {"repeats": 2}}
    b["cheney2017"]["repeats"] = 3
    with pytest.raises(ConfigError, match=r"cheney2017\.repeats: 2 there, 3 here"):
        check_run_folder(run, b, ["b.yaml"])
