"""A run's config, checked as the workflow checks it before any job.

One code path for ``snakemake`` (``workflow/rules/common.smk`` calls :func:`check_run_config`
while it plans) and for ``netperturb check-config`` (:func:`load_run_config`), so the command
never says "ok" to a config the workflow refuses. In order:

1. every config file read strictly: valid YAML, no key given twice, a mapping at the top level
   (:func:`netperturb.core.config.check_config_files`; names the file);
2. ``--config KEY=VALUE`` overrides read as the same text in a file would be
   (:func:`netperturb.core.config.parse_overrides`);
3. names that become folders: the pattern of config/schema.yaml and the file system's name
   limit (:func:`netperturb.core.config.check_names`);
4. the schema (config/schema.yaml), which fills in every default and names every bad key
   (:func:`netperturb.core.config.validate_config`); seeds lie in [0, 2^63 - 1] there;
5. the input folders of the datasets to be prepared (``datasets.<name>.root``) exist;
6. every study's plan (models, layers, levels, fault variants: the checks the schema cannot
   make), :data:`RunConfig.plans`;
7. the run folder ``results/<run>/`` holds no outputs of another config that this one would
   contradict (:mod:`netperturb.core.runfolder`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from netperturb.core.config import (
    ConfigError,
    check_config_files,
    check_names,
    load_config_files,
    update_config,
    validate_config,
)

__all__ = [
    "SCHEMA", "DEFAULT_CONFIG", "RunConfig", "check_run_config", "load_run_config", "used_datasets",
    "check_dataset_inputs", "plan_run",
]  # fmt: skip

_REPO = Path(__file__).resolve().parents[2]
#: The schema of this checkout (config/schema.yaml).
SCHEMA = _REPO / "config" / "schema.yaml"
#: The config the workflow reads when no ``--configfile`` is given.
DEFAULT_CONFIG = "config/config.yaml"


@dataclass
class RunConfig:
    """A checked config and what it plans.

    Attributes:
        config: the config, validated, every default filled in.
        files: the config files it was read from (in order).
        plans: ``data`` (:class:`netperturb.datasets.sources.DataPlan`), ``sources``
            (:class:`netperturb.models.sources.SourcePlan`), ``cheney2017``,
            ``faults``, ``shen2021``, ``pravin2024``: each study's plan, made from the config
            whether or not the study is listed (as the workflow defines every rule).
    """

    config: dict
    files: list[str]
    plans: dict[str, Any] = field(default_factory=dict)


def used_datasets(config: Mapping[str, Any]) -> list[str]:
    """The built-in datasets the listed studies read (validated config): ``dataset`` for
    cheney2017 and faults, ``shen2021.dataset`` / ``pravin2024.dataset`` (default: ``dataset``)
    for those. A ``dataset`` mapping (the config's own images) is not among them: its folder or
    file is checked by :func:`netperturb.datasets.sources.plan_data`."""
    studies = config["studies"]
    out = []
    if {"cheney2017", "faults"} & set(studies):
        out.append(config["dataset"])
    if "shen2021" in studies:
        out.append(config["shen2021"].get("dataset") or config["dataset"])
    if "pravin2024" in studies:
        out.append(config["pravin2024"].get("dataset") or config["dataset"])
    return list(dict.fromkeys(d for d in out if isinstance(d, str)))


def check_dataset_inputs(config: Mapping[str, Any], workdir: str | os.PathLike = ".") -> None:
    """Step 5: each dataset the listed studies read (:func:`used_datasets`) whose shards are not
    prepared yet (no ``resources/data/<name>/shards/manifest.json`` under ``workdir``) has its
    input folder (:func:`netperturb.datasets.prepare.input_folder_problem`).

    Raises:
        ConfigError: names the key (``datasets.<name>.root``), the path and what it must hold.
    """
    from netperturb.datasets.prepare import input_folder_problem

    workdir = Path(workdir)
    for name in used_datasets(config):
        if (workdir / "resources" / "data" / name / "shards" / "manifest.json").exists():
            continue  # prepared already: its inputs are no longer read
        why = input_folder_problem(name, config["datasets"].get(name, {}), workdir)
        if why:
            raise ConfigError(why)


def plan_run(config: Mapping[str, Any]) -> dict[str, Any]:
    """Step 6: every study's plan from the validated ``config`` (:data:`RunConfig.plans`).

    Raises:
        ConfigError: what a study's plan refuses (unknown architecture, a layer selection that
            matches nothing, bad levels or fault options), naming the key.
    """
    from netperturb.datasets import dataset_info
    from netperturb.datasets.sources import plan_data
    from netperturb.models.sources import plan_sources
    from netperturb.studies.cheney2017.plan import plan_grid
    from netperturb.studies.faults.plan import plan_faults
    from netperturb.studies.pravin2024.plan import plan_study
    from netperturb.studies.shen2021.plan import check_config as plan_shen2021

    data = plan_data(config)  # a built-in dataset, or the config's own images
    info = data.info
    own = lambda key: dataset_info(key) if key else info  # noqa: E731  (a study's own built-in dataset)
    shen, pravin = own(config["shen2021"].get("dataset")), own(config["pravin2024"].get("dataset"))
    shape = lambda i: dict(num_classes=i["num_classes"], in_channels=i["in_channels"])  # noqa: E731
    return {
        "data": data,
        "sources": plan_sources(config, num_classes=info["num_classes"], data=data),
        "cheney2017": plan_grid(config, **shape(info)),
        "shen2021": plan_shen2021(config["shen2021"], **shape(shen)),
        "pravin2024": plan_study(config["pravin2024"], **shape(pravin)),
        "faults": plan_faults(config, **shape(info)),
    }


def check_run_config(
    config: Any,
    *,
    files: Sequence[str | os.PathLike] = (),
    overrides: Mapping[str, Any] | None = None,
    schema: str | os.PathLike = SCHEMA,
    workdir: str | os.PathLike = ".",
) -> RunConfig:
    """Check a run's config as the workflow does before any job (steps 1-7 of this module), in
    place: ``config`` gets the overrides and the schema's defaults.

    Args:
        config: the config as Snakemake read it (or :func:`load_run_config` did).
        files: the config files it came from (named in messages, read again strictly).
        overrides: ``--config`` values to apply over ``config`` (already parsed,
            :func:`netperturb.core.config.parse_overrides`).
        schema: the JSON schema (config/schema.yaml of this checkout).
        workdir: the folder the workflow runs in (``results/``, ``resources/`` are under it).

    Returns:
        The :class:`RunConfig`.

    Raises:
        ConfigError: the first problem found; the message starts with the file or the key and
            says what to do.
    """
    files = [str(f) for f in dict.fromkeys(map(str, files))]
    workdir = Path(workdir)
    check_config_files(files)
    if not isinstance(config, dict):
        raise ConfigError(f"{', '.join(files) or 'the config'}: the top level must be a mapping of keys, got {type(config).__name__}")
    if overrides:
        update_config(config, overrides)
    check_names(config, workdir)
    validate_config(config, schema, files)
    check_dataset_inputs(config, workdir)
    plans = plan_run(config)
    from netperturb.core.runfolder import check_run_folder

    check_run_folder(workdir / "results" / config["run"], config, files, used_datasets(config))
    return RunConfig(config=config, files=files, plans=plans)


def load_run_config(
    files: Sequence[str | os.PathLike] = (),
    overrides: Mapping[str, Any] | None = None,
    *,
    schema: str | os.PathLike = SCHEMA,
    workdir: str | os.PathLike = ".",
) -> RunConfig:
    """Read config files as the workflow does (``config/config.yaml`` when none is given; later
    files update earlier ones) and check them with :func:`check_run_config`.

    Raises:
        ConfigError: see :func:`check_run_config`; also a file that does not exist.
    """
    files = [str(f) for f in files] or [str(Path(workdir) / DEFAULT_CONFIG)]
    return check_run_config(load_config_files(files), files=files, overrides=overrides, schema=schema, workdir=workdir)
