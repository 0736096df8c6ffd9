"""The jobs of the hardware-fault study as plain functions of a run context, paths and config values.

Each function is what one rule of ``workflow/rules/faults.smk`` runs: the fault-free
reference network of a model in one format (:func:`baseline`, rule ``faults_baseline``: fp32,
or the network with every Conv2d / Linear weight stored in fp16 / bf16 / int8), one model x
fault variant job over some of its layers (:func:`perturb_layers`, ``faults_perturb``) and the merge
(:func:`merge_faults`, ``faults_merge``). Every output is written atomically.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Mapping, Sequence

import pandas as pd

from netperturb.core.context import RunContext
from netperturb.core.io import write_csv
from netperturb.core.layers import find_layers, select_layers
from netperturb.core.merge import merge_planned
from netperturb.core.resume import CellStore, counts_from_json, data_fingerprint, environment
from netperturb.datasets.shards import data_digest
from netperturb.models.loaded import LoadedModel
from netperturb.models.loading import eval_data, load_for_job
from netperturb.perturb.faults import format_model
from netperturb.perturb.grid import COLUMNS, LayerJob, baseline_table, run_layer_job
from netperturb.studies.faults.plan import Variant, make_variant, reference_options

__all__ = ["FAULT_COLUMNS", "baseline", "perturb_layers", "perturb_layer", "merge_faults", "in_format"]

#: Columns of the study's tables: :data:`netperturb.perturb.grid.COLUMNS`, then the fault
#: model (``fault``: bit_flip, ..., ``none`` for a baseline), where it acts (``target``:
#: weights / activations), the storage ``format``, the eligible ``bits``, how the hit bits are
#: counted at a rate (``count``: binomial / exact; ``""`` for noise and baselines) and the
#: fault-free ``reference`` network (fp32, fp16, bf16, int8_tensor, int8_channel).
FAULT_COLUMNS = COLUMNS + ["fault", "target", "format", "bits", "count", "reference"]


def in_format(loaded: LoadedModel, reference: str) -> LoadedModel:
    """``loaded`` with every Conv2d / Linear weight stored in the reference's format
    (:func:`netperturb.perturb.faults.format_model`); the model itself for ``fp32``."""
    opts = reference_options(reference)
    if opts["format"] == "fp32":
        return loaded
    return replace(loaded, model=format_model(loaded.model, opts["format"], opts["granularity"], opts["include_bias"]))


def baseline(ctx: RunContext, out_csv: str | os.PathLike, *, reference: str) -> pd.DataFrame:
    """The fault-free reference network ``reference`` (fp32, fp16, bf16, int8_tensor,
    int8_channel, optionally ``_bias``) of ``ctx``'s model evaluated on its evaluation split:
    one row of :data:`FAULT_COLUMNS` (fault ``none``, level 0).

    Raises:
        netperturb.models.expects.InputMismatchError: the data is not what the model expects.
    """
    loaded, dev = load_for_job(ctx)
    loaded = in_format(loaded, reference)
    images, labels = eval_data(ctx.shard_dir, ctx.split, loaded, dev)
    df = baseline_table(loaded, images, labels, study=ctx.run, dataset=ctx.dataset, model=ctx.model,
                        study_seed=ctx.study_seed, batch_size=ctx.batch_size,
                        data_digest=data_digest(ctx.shard_dir, ctx.split))  # fmt: skip
    opts = reference_options(reference)
    df = df.assign(fault="none", target="", format=opts["format"], bits="", count="", reference=reference)
    write_csv(df[FAULT_COLUMNS], out_csv)
    return df[FAULT_COLUMNS]


def perturb_layers(
    ctx: RunContext, out_csv: str | os.PathLike, *, layers: Sequence[str], variant: str, spec: Mapping[str, Any],
    repeats: int, engine: str = "fast", max_replicas: int | None = None,
) -> pd.DataFrame:  # fmt: skip
    """One job: every level x repeat of fault variant ``variant`` (its config ``spec``:
    ``fault``, ``levels`` and the fault's options) on each of ``layers`` of ``ctx``'s model in
    turn -> one CSV of :data:`FAULT_COLUMNS` (the layers in the given order). A weight bit
    fault in fp16 / bf16 / int8 acts on the network stored in that format (every layer), so
    level 0 is that network bit for bit.

    One job faults several layers (``faults.layers_per_job``; the default config: every layer
    of a model) so that the process start-up, the model and the images are paid once; every
    cell is the same as in a job of one layer (its seed depends on the model, layer, variant,
    level and repeat only).

    Cell-level resume (:mod:`netperturb.core.resume`), as the other study jobs: every finished
    cell is appended to ``<out_csv>.partial.jsonl``; a job killed and started again computes
    only the missing cells (same weights, data, layers, variant, batch size, engine, device
    type and versions) and writes the same CSV as an uninterrupted run.

    Raises:
        ConfigError: a bad variant (:func:`netperturb.studies.faults.plan.make_variant`).
        LayerSelectionError: a name in ``layers`` is not a perturbable module path of the model.
        ValueError: no layers.
        netperturb.models.expects.InputMismatchError: the data is not what the model expects.
    """
    if not layers:
        raise ValueError("perturb_layers: no layers given")
    var, _ = make_variant(variant, spec, f"faults.perturbations.{variant}")
    loaded, dev = load_for_job(ctx)
    loaded = in_format(loaded, var.reference)
    found = find_layers(loaded.model)
    infos = [select_layers(found, [name])[0] for name in layers]
    digest = data_digest(ctx.shard_dir, ctx.split)
    images, labels = eval_data(ctx.shard_dir, ctx.split, loaded, dev)
    store = CellStore(out_csv, {
        "job": "faults.perturb_layers", "study": ctx.run, "dataset": ctx.dataset, "model": ctx.model,
        "weights": loaded.weights, "data": data_fingerprint(ctx.shard_dir, ctx.split), "layers": list(layers),
        "variant": variant, "spec": {k: v for k, v in spec.items() if k != "levels"}, "study_seed": ctx.study_seed,
        "batch_size": ctx.batch_size, "engine": engine, **environment(dev),
    }, check=counts_from_json)  # fmt: skip
    frames = []
    for info in infos:
        pert = make_variant(variant, spec, f"faults.perturbations.{variant}")[1]  # a fresh fault per layer
        job = LayerJob(study=ctx.run, dataset=ctx.dataset, model=ctx.model, layer=info, perturbation=pert,
                       levels=var.levels, repeats=int(repeats), study_seed=ctx.study_seed, data_digest=digest)  # fmt: skip
        frames.append(run_layer_job(job, loaded, images, labels, batch_size=ctx.batch_size, progress=ctx.progress,
                                    engine=engine, max_replicas=max_replicas, store=store))  # fmt: skip
    df = _describe(pd.concat(frames, ignore_index=True), var)
    store.finish(df)
    return df


def perturb_layer(ctx: RunContext, out_csv: str | os.PathLike, *, layer: str, **kw: Any) -> pd.DataFrame:
    """One job on one layer: :func:`perturb_layers` with ``layers=[layer]`` (same keyword
    arguments, same cells, same errors)."""
    return perturb_layers(ctx, out_csv, layers=[layer], **kw)


def _describe(df: pd.DataFrame, var: Variant) -> pd.DataFrame:
    return df.assign(fault=var.fault, target=var.target, format=var.format, bits=var.bits, count=var.count,
                     reference=var.reference)[FAULT_COLUMNS]  # fmt: skip


def merge_faults(
    inputs: Sequence[str | os.PathLike], out_csv: str | os.PathLike, out_parquet: str | os.PathLike | None = None, *,
    planned: Mapping[str, Sequence[Sequence[float]]] | None = None, baselines: Sequence[str | os.PathLike] = (),
    out_baseline: str | os.PathLike | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Concatenate job tables (and the baselines into ``out_baseline``) into one tidy table
    sorted by model, variant, layer depth, level, repeat, after checking them against the plan
    (:func:`netperturb.core.merge.merge_planned`; ``planned`` =
    :meth:`~netperturb.studies.faults.plan.FaultPlan.job_cells`).

    Raises:
        ValueError: no inputs. MergeError: see :func:`netperturb.core.merge.merge_planned`
            (columns of :data:`FAULT_COLUMNS`).
    """
    return merge_planned(inputs, out_csv, out_parquet, columns=FAULT_COLUMNS,
                         sort_by=["model", "perturbation", "reference", "layer_index", "level", "repeat"],
                         planned=planned, cell_columns=("layer", "level", "repeat"), baselines=baselines,
                         out_baseline=out_baseline)  # fmt: skip
