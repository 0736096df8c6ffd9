"""The jobs of the Cheney et al. 2017 grid as plain functions of paths and config values.

Each function here is what one rule of ``workflow/rules/cheney2017.smk`` runs (the scripts in
``workflow/scripts/cheney2017/`` only unpack ``snakemake.input/output/params`` and call one of
these; the CLI calls the same functions): the clean baseline of a model (:func:`baseline`,
rule ``cheney2017_baseline``), one model x layer x perturbation job (:func:`perturb_layer`,
``cheney2017_perturb``) and the merge of the job tables (:func:`merge_grid`,
``cheney2017_merge``). Every output is written atomically. What the config plans (layers,
levels, one job per model x layer x perturbation): :mod:`netperturb.studies.cheney2017.plan`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import pandas as pd

from netperturb.core.config import expand_levels
from netperturb.core.evaluate import resolve_device
from netperturb.core.io import write_csv
from netperturb.core.layers import find_layers, select_layers
from netperturb.core.merge import merge_planned
from netperturb.core.resume import CellStore, counts_from_json, data_fingerprint, environment
from netperturb.datasets.shards import data_digest
from netperturb.models.checkpoints import load_model
from netperturb.models.loading import eval_data
from netperturb.perturb.grid import COLUMNS, LayerJob, baseline_table, run_layer_job
from netperturb.perturb.registry import make_perturbation

__all__ = ["baseline", "perturb_layer"]


def baseline(
    checkpoint: str | os.PathLike,
    shard_dir: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    study: str,
    dataset: str,
    model_name: str,
    study_seed: int,
    split: str = "test",
    batch_size: int = 256,
    device: str = "auto",
    model_source: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Evaluate the unperturbed model on ``split``; one row of :data:`~netperturb.perturb.grid.COLUMNS`.

    ``checkpoint`` is a netperturb checkpoint, or with ``model_source`` (pretrained
    torchvision weights, :func:`netperturb.models.weights.resolve_model_source`) the weights file."""
    dev = resolve_device(device)
    loaded = load_model(checkpoint, dev, model_source)
    images, labels = eval_data(shard_dir, split, loaded, dev)
    df = baseline_table(
        loaded, images, labels, study=study, dataset=dataset, model=model_name,
        study_seed=study_seed, batch_size=batch_size, data_digest=data_digest(shard_dir, split),
    )  # fmt: skip
    write_csv(df, out_csv)
    return df


def perturb_layer(
    checkpoint: str | os.PathLike,
    shard_dir: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    study: str,
    dataset: str,
    model_name: str,
    layer: str,
    perturbation: str,
    perturbation_options: Mapping[str, Any],
    levels: Sequence[float] | Mapping[str, float],
    repeats: int,
    study_seed: int,
    split: str = "test",
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = True,
    model_source: Mapping[str, Any] | None = None,
    engine: str = "fast",
    precision: str = "fp32",
    max_replicas: int | None = None,
) -> pd.DataFrame:
    """One perturbation job (model x layer x perturbation, all levels x repeats) -> CSV.

    ``checkpoint`` is a netperturb checkpoint, or with ``model_source`` (pretrained
    torchvision weights, :func:`netperturb.models.weights.resolve_model_source`) the weights file.
    The evaluation images are kept on the GPU when there is room (else pinned host memory).
    ``engine``, ``precision`` and ``max_replicas`` are those of
    :func:`netperturb.perturb.grid.run_layer_job` (config ``cheney2017.engine`` / ``.precision`` /
    ``.max_replicas``).

    Cell-level resume (:mod:`netperturb.core.resume`): every finished cell is appended to
    ``<out_csv>.partial.jsonl``; a restarted job computes only the cells missing there (when
    the weights, data, batch size, engine, precision, device type and versions are the
    same), writes the same CSV as an uninterrupted run, logs how many cells it reused and
    removes the partial file.

    Raises:
        LayerSelectionError: ``layer`` is not a Conv2d/Linear module path of the model.
        ValueError: unknown perturbation or option, or a level out of its range.
    """
    dev = resolve_device(device)
    loaded = load_model(checkpoint, dev, model_source)
    (info,) = select_layers(find_layers(loaded.model), [layer])
    options = {k: v for k, v in perturbation_options.items() if k != "levels"}
    job = LayerJob(
        study=study,
        dataset=dataset,
        model=model_name,
        layer=info,
        perturbation=make_perturbation(perturbation, **options),
        levels=expand_levels(levels, key=f"cheney2017.perturbations.{perturbation}.levels"),
        repeats=int(repeats),
        study_seed=int(study_seed),
        data_digest=data_digest(shard_dir, split),
    )
    images, labels = eval_data(shard_dir, split, loaded, dev)
    store = CellStore(out_csv, {
        "job": "cheney2017.perturb_layer", "study": study, "dataset": dataset, "model": model_name,
        "weights": loaded.weights, "data": data_fingerprint(shard_dir, split), "layer": layer,
        "perturbation": perturbation, "options": options, "study_seed": int(study_seed),
        "batch_size": int(batch_size), "engine": engine, "precision": precision, **environment(dev),
    }, check=counts_from_json)  # fmt: skip
    df = run_layer_job(
        job, loaded, images, labels, batch_size=batch_size, progress=progress,
        engine=engine, precision=precision, max_replicas=max_replicas, store=store,
    )  # fmt: skip
    store.finish(df)
    return df


def merge_grid(
    inputs: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_parquet: str | os.PathLike | None = None,
    *,
    planned: Mapping[str, Sequence[Sequence[float]]] | None = None,
    baselines: Sequence[str | os.PathLike] = (),
    out_baseline: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Concatenate per-job tables (and the baselines into ``out_baseline``) into one tidy table
    (CSV, and Parquet if asked), sorted by model, layer depth, perturbation, level, repeat,
    after checking them against the plan (:func:`netperturb.core.merge.merge_planned`:
    ``planned`` = job table -> its (level, repeat) cells,
    :meth:`~netperturb.studies.cheney2017.plan.GridPlan.job_cells`).

    Raises:
        ValueError: no inputs. MergeError: a table cut off, lacking a column of
            :data:`~netperturb.perturb.grid.COLUMNS`, with cells other than planned, without
            provenance, or two weights ids for one model / two data digests for one dataset
            (names the files and the remedy; nothing is written).
    """
    return merge_planned(
        inputs, out_csv, out_parquet, columns=COLUMNS, sort_by=["model", "layer_index", "perturbation", "level", "repeat"],
        planned=planned, baselines=baselines, out_baseline=out_baseline,
    )  # fmt: skip
