"""One run folder, one config: what ``results/<run>/`` holds, which configs made it, and whether
its folders can be written.

Two configs may name the same ``run``. Chosen: the second one **joins** the run when it agrees
with what the folder already holds wherever their outputs meet, and is **refused** before any
job otherwise. They meet in three places: the models trained in ``results/<run>/models/``
(shared by cheney2017 and faults; their training settings ``models.<name>`` other than
``layers``), the dataset those models are trained and evaluated on (``dataset``), and a study
both configs list (its section and the study seed ``seed``, which enter every cell; not its
``resources``, what its jobs ask of a scheduler, which change no output).
A config that joins adds its studies to the run: the index page lists every study present in
``results/<run>/`` and links the config of each (``results/<run>/<study>/config.yaml``). Why
not always refuse: running a second study on the same trained models (``studies: [faults]``
after ``studies: [cheney2017]``) is the point of a shared ``models/`` folder. Why not always
join: a second config that trains a model differently would replace the checkpoint under the
first config's tables, and Snakemake would rerun one config's jobs each time the other ran.

The same config file edited and run again is not a second config: Snakemake reruns what the
edit changed (its params trigger), as before.

What the folder holds is recorded in ``results/<run>/.netperturb-run.json`` when a run starts
(the workflow's ``onstart``, never in a dry run): the dataset, each model's training settings,
each study's section (without ``resources``) and seed, each with the config files that set it.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from netperturb.core.config import ConfigError

__all__ = ["RECORD", "shared_settings", "check_run_folder", "record_run", "unwritable_outputs"]

#: The record of a run folder, relative to ``results/<run>/``.
RECORD = ".netperturb-run.json"

_STUDIES = ("cheney2017", "shen2021", "pravin2024", "faults")


def shared_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the outputs of ``config`` (validated) in its run folder depend on where another
    config's outputs could meet them: ``{"dataset": ..., "models.<name>": training settings
    (without ``layers``), "<study>": {"seed", "section"} for each listed study}``; a study's ``resources`` are left
    out (they change no output)."""
    out: dict[str, Any] = {"dataset": config["dataset"]}
    for name, spec in config["models"].items():
        out[f"models.{name}"] = {k: v for k, v in spec.items() if k != "layers"}
    for study in config["studies"]:
        section = {k: v for k, v in config.get(study, {}).items() if k != "resources"}
        out[study] = {"seed": config["seed"], "section": section}
    return json.loads(json.dumps(out, default=str))  # as it reads back from the record


def _files(files: Sequence[str]) -> list[str]:
    return [os.path.abspath(f) for f in files]


def _read_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RECORD
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{path}: unreadable record of what {run_dir}/ holds ({e}); delete it (rm {path}) to let this "
            "config claim the folder, or give this config another run name"
        ) from None
    return rec.get("settings", {}) if isinstance(rec, dict) else {}


def _differences(there: Any, here: Any, key: str, out: list[str], limit: int = 4) -> None:
    if len(out) >= limit or there == here:
        return
    if isinstance(there, dict) and isinstance(here, dict):
        for k in list(dict.fromkeys([*there, *here])):
            _differences(there.get(k, "(not set)"), here.get(k, "(not set)"), f"{key}.{k}", out, limit)
        return
    short = lambda v: (json.dumps(v) if not isinstance(v, str) else v)[:60]  # noqa: E731
    out.append(f"{key}: {short(there)} there, {short(here)} here")


def check_run_folder(run_dir: str | os.PathLike, config: Mapping[str, Any], files: Sequence[str], datasets=None) -> None:
    """Refuse ``config`` (validated; read from ``files``) when ``run_dir`` holds outputs of
    another config that it contradicts (see the module's text); a folder without a record,
    or one whose record agrees, is fine.

    Raises:
        ConfigError: names the record, the files of both configs, the settings that differ
            (there / here) and the remedy.
    """
    run_dir = Path(run_dir)
    held = _read_record(run_dir)
    if not held:
        return
    mine = _files(files)
    conflicts, others = [], []
    for key, value in shared_settings(config).items():
        if key not in held or held[key]["value"] == value or held[key]["files"] == mine:
            continue
        diff: list[str] = []
        _differences(held[key]["value"], value, key.replace(".section", ""), diff)
        conflicts += [d.replace(f"{key}.section.", f"{key}.") for d in diff]
        others += [f for f in held[key]["files"] if f not in others]
    if not conflicts:
        return
    rel = lambda f: os.path.relpath(f) if not os.path.relpath(f).startswith("../..") else f  # noqa: E731
    raise ConfigError(
        f"run {config['run']!r}: {run_dir}/ holds the outputs of another config ({', '.join(map(rel, others))}; "
        f"recorded in {run_dir / RECORD}) which this one ({', '.join(files) or 'no file'}) contradicts where their "
        f"outputs meet: {'; '.join(conflicts)}. One run folder holds the outputs of one config: the models trained in "
        f"{run_dir}/models/ are shared by its studies, and a study's tables depend on its section and seed. Remedy: give "
        f"this config another run name (run: {config['run']}-2, say), or delete {run_dir}/ to replace the other "
        "config's outputs. Nothing was run."
    )


def record_run(run_dir: str | os.PathLike, config: Mapping[str, Any], files: Sequence[str]) -> Path:
    """Record in ``<run_dir>/.netperturb-run.json`` (atomically) what the run of ``config``
    (validated; from ``files``) puts in the folder, each setting with the files that set it;
    settings of other configs that this one does not touch are kept. Returns the record's path."""
    from netperturb.core.io import write_json

    run_dir = Path(run_dir)
    held = copy.deepcopy(_read_record(run_dir))
    mine = _files(files)
    for key, value in shared_settings(config).items():
        held[key] = {"value": value, "files": mine}
    path = run_dir / RECORD
    write_json({"netperturb_run": 1, "settings": held}, path)
    return path


def unwritable_outputs(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The folders among those that hold (or will hold) ``paths`` that this process cannot
    write: for each path, its nearest existing folder must accept new files (``os.access``
    W_OK: a read-only file system, or a folder without write permission, fails it). One line
    per folder, ``<folder> (<why>): <first path>``."""
    seen: dict[str, str] = {}
    for p in map(Path, paths):
        folder = p.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        key = str(folder)
        if key in seen:
            continue
        if os.access(folder, os.W_OK):
            seen[key] = ""
            continue
        why = "read-only file system" if _read_only_fs(folder) else "no write permission"
        seen[key] = f"{folder} ({why}): {p}"
    return [v for v in seen.values() if v]


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False

