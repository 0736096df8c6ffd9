"""The jobs of the Cheney et al. 2017 grid as plain functions of a run context, paths and config values.

Each function here is what one rule of ``workflow/rules/cheney2017.smk`` runs (the scripts in
``workflow/scripts/cheney2017/`` only build the :class:`~netperturb.core.context.RunContext`
from ``snakemake`` and call one of these; the CLI calls the same functions): the clean
baseline of a model (:func:`baseline`, rule ``cheney2017_baseline``), one model x
perturbation job over some of its layers (:func:`perturb_layers`, ``cheney2017_perturb``) and
the merge of the job tables (:func:`merge_grid`, ``cheney2017_merge``). Every output is
written atomically. What the config plans (layers, levels, the layers of each job):
:mod:`netperturb.studies.cheney2017.plan`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import pandas as pd

from netperturb.core.config import expand_levels
from netperturb.core.context import RunContext
from netperturb.core.io import write_csv
from netperturb.core.layers import find_layers, select_layers
from netperturb.core.merge import merge_planned
from netperturb.core.resume import CellStore, counts_from_json, data_fingerprint, environment
from netperturb.datasets.shards import data_digest
from netperturb.models.loading import eval_data, load_for_job
from netperturb.perturb.grid import COLUMNS, LayerJob, baseline_table, run_layer_job
from netperturb.perturb.registry import make_perturbation

__all__ = ["baseline", "perturb_layers", "perturb_layer", "merge_grid"]


def baseline(ctx: RunContext, out_csv: str | os.PathLike) -> pd.DataFrame:
    """Evaluate the unperturbed model of ``ctx`` on its evaluation split; one row of
    :data:`~netperturb.perturb.grid.COLUMNS`.

    The model comes from ``ctx.model_file`` by ``ctx.source`` (any model source,
    :mod:`netperturb.models.sources`) and is checked against the data first
    (:func:`netperturb.models.loading.load_for_job`).

    Raises:
        netperturb.models.expects.InputMismatchError: the data is not what the model expects.
    """
    loaded, dev = load_for_job(ctx)
    images, labels = eval_data(ctx.shard_dir, ctx.split, loaded, dev)
    df = baseline_table(
        loaded, images, labels, study=ctx.run, dataset=ctx.dataset, model=ctx.model,
        study_seed=ctx.study_seed, batch_size=ctx.batch_size, data_digest=data_digest(ctx.shard_dir, ctx.split),
    )  # fmt: skip
    write_csv(df, out_csv)
    return df


def perturb_layers(
    ctx: RunContext, out_csv: str | os.PathLike, *, layers: Sequence[str], perturbation: str,
    options: Mapping[str, Any], repeats: int, engine: str = "fast", precision: str = "fp32",
    max_replicas: int | None = None, focus: tuple[float, int] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """One perturbation job (model x perturbation x some layers, all levels x repeats of each
    layer) -> one CSV, the layers in the given order, levels then repeats inside each.

    One job perturbs several layers (``cheney2017.layers_per_job``; the default config: every
    layer of a model) so that the process start-up (about 3.5 s of imports on a CPU), the model
    and the images are paid once; every cell is the same as in a job of one layer (its seed
    depends on the model, layer, perturbation, level and repeat only).

    Args:
        ctx: the run context (model, data, split, study seed, batch size, device).
        layers: module paths of the layers, each perturbed on its own.
        perturbation: its name (``cheney2017.perturbations``).
        options: its config entry: ``levels`` (a list or {start, stop, step}) and the
            perturbation's own options.
        repeats: independent draws per level.
        engine, precision, max_replicas: those of :func:`netperturb.perturb.grid.run_layer_job`
            (config ``cheney2017.engine`` / ``.precision`` / ``.max_replicas``).
        focus: ``(level, n)``: that level of the grid gets ``n`` repeats instead of ``repeats``
            (config ``cheney2017.finding_repeats``: the findings' level); its first ``repeats``
            cells are the grid's own (same seeds), the others follow with repeat indices
            ``repeats .. n - 1``.

    The evaluation images are kept on the GPU when there is room (else pinned host memory).

    Cell-level resume (:mod:`netperturb.core.resume`): every finished cell is appended to
    ``<out_csv>.partial.jsonl``; a restarted job computes only the cells missing there (when
    the weights, data, layers, batch size, engine, precision, device type and versions are the
    same), writes the same CSV as an uninterrupted run, logs how many cells it reused and
    removes the partial file.

    Raises:
        LayerSelectionError: a name in ``layers`` is not a perturbable module path of the model.
        ValueError: no layers, unknown perturbation or option, or a level out of its range.
        netperturb.models.expects.InputMismatchError: the data is not what the model expects.
    """
    if not layers:
        raise ValueError("perturb_layers: no layers given")
    loaded, dev = load_for_job(ctx)
    found = find_layers(loaded.model)
    infos = [select_layers(found, [name])[0] for name in layers]
    extra = {k: v for k, v in options.items() if k != "levels"}
    levels = expand_levels(options["levels"], key=f"cheney2017.perturbations.{perturbation}.levels")
    digest = data_digest(ctx.shard_dir, ctx.split)
    images, labels = eval_data(ctx.shard_dir, ctx.split, loaded, dev)
    store = CellStore(out_csv, {
        "job": "cheney2017.perturb_layers", "study": ctx.run, "dataset": ctx.dataset, "model": ctx.model,
        "weights": loaded.weights, "data": data_fingerprint(ctx.shard_dir, ctx.split), "layers": list(layers),
        "perturbation": perturbation, "options": extra, "study_seed": ctx.study_seed,
        "batch_size": ctx.batch_size, "engine": engine, "precision": precision, **environment(dev),
    }, check=counts_from_json)  # fmt: skip
    run = dict(batch_size=ctx.batch_size, progress=ctx.progress, engine=engine, precision=precision,
               max_replicas=max_replicas, store=store)  # fmt: skip
    frames = []
    for info in infos:
        job = LayerJob(study=ctx.run, dataset=ctx.dataset, model=ctx.model, layer=info,
                       perturbation=make_perturbation(perturbation, **extra), levels=levels, repeats=int(repeats),
                       study_seed=ctx.study_seed, data_digest=digest)  # fmt: skip
        df = run_layer_job(job, loaded, images, labels, **run)
        if focus is not None and int(focus[1]) > int(repeats):
            more = dataclasses.replace(job, levels=[float(focus[0])], repeats=int(focus[1]))  # the grid's cells are in the store
            added = run_layer_job(more, loaded, images, labels, **run)
            df = pd.concat([df, added[added["repeat"] >= int(repeats)]], ignore_index=True)
            df = df.sort_values(["level", "repeat"], kind="stable").reset_index(drop=True)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    store.finish(df)
    return df


def perturb_layer(ctx: RunContext, out_csv: str | os.PathLike, *, layer: str, **kw: Any) -> pd.DataFrame:
    """One perturbation job on one layer: :func:`perturb_layers` with ``layers=[layer]`` (same
    keyword arguments, same cells, same errors)."""
    return perturb_layers(ctx, out_csv, layers=[layer], **kw)


def merge_grid(
    inputs: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_parquet: str | os.PathLike | None = None,
    *,
    planned: Mapping[str, Sequence[Sequence]] | None = None,
    baselines: Sequence[str | os.PathLike] = (),
    out_baseline: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Concatenate per-job tables (and the baselines into ``out_baseline``) into one tidy table
    (CSV, and Parquet if asked), sorted by model, layer depth, perturbation, level, repeat,
    after checking them against the plan (:func:`netperturb.core.merge.merge_planned`:
    ``planned`` = job table -> its (layer, level, repeat) cells,
    :meth:`~netperturb.studies.cheney2017.plan.GridPlan.job_cells`).

    Raises:
        ValueError: no inputs. MergeError: a table cut off, lacking a column of
            :data:`~netperturb.perturb.grid.COLUMNS`, with cells other than planned, without
            provenance, or two weights ids for one model / two data digests for one dataset
            (names the files and the remedy; nothing is written).
    """
    return merge_planned(
        inputs, out_csv, out_parquet, columns=COLUMNS, sort_by=["model", "layer_index", "perturbation", "level", "repeat"],
        planned=planned, cell_columns=("layer", "level", "repeat"), baselines=baselines, out_baseline=out_baseline,
    )  # fmt: skip
