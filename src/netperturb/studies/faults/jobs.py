"""The jobs of the hardware-fault study as plain functions of paths and config values.

Each function is what one rule of ``workflow/rules/faults.smk`` runs: the fault-free
reference network of a model in one format (:func:`baseline`, rule ``faults_baseline``: fp32,
or the network with every Conv2d / Linear weight stored in fp16 / bf16 / int8), one model x
layer x fault variant job (:func:`perturb_layer`, ``faults_perturb``) and the merge
(:func:`merge_faults`, ``faults_merge``). Every output is written atomically.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import pandas as pd

from netperturb.core.evaluate import resolve_device
from netperturb.core.io import write_csv
from netperturb.core.layers import find_layers, select_layers
from netperturb.core.merge import merge_tables
from netperturb.models.checkpoints import load_model
from netperturb.models.loaded import LoadedModel
from netperturb.models.loading import eval_data
from netperturb.perturb.faults import format_model
from netperturb.perturb.grid import COLUMNS, LayerJob, baseline_table, run_layer_job
from netperturb.studies.faults.plan import Variant, make_variant, reference_options

__all__ = ["FAULT_COLUMNS", "baseline", "perturb_layer", "merge_faults", "in_format"]

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
    model = format_model(loaded.model, opts["format"], opts["granularity"], opts["include_bias"])
    return LoadedModel(model=model, preprocess=loaded.preprocess, arch=loaded.arch, weights=loaded.weights,
                       meta=loaded.meta)  # fmt: skip


def baseline(
    checkpoint: str | os.PathLike, shard_dir: str | os.PathLike, out_csv: str | os.PathLike, *, study: str,
    dataset: str, model_name: str, reference: str, study_seed: int, split: str = "test", batch_size: int = 256,
    device: str = "auto", model_source: Mapping[str, Any] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """The fault-free reference network ``reference`` (fp32, fp16, bf16, int8_tensor,
    int8_channel, optionally ``_bias``) evaluated on ``split``: one row of
    :data:`FAULT_COLUMNS` (fault ``none``, level 0)."""
    dev = resolve_device(device)
    loaded = in_format(load_model(checkpoint, dev, model_source), reference)
    images, labels = eval_data(shard_dir, split, loaded, dev)
    df = baseline_table(loaded, images, labels, study=study, dataset=dataset, model=model_name,
                        study_seed=study_seed, batch_size=batch_size)  # fmt: skip
    opts = reference_options(reference)
    df = df.assign(fault="none", target="", format=opts["format"], bits="", count="", reference=reference)
    write_csv(df[FAULT_COLUMNS], out_csv)
    return df[FAULT_COLUMNS]


def perturb_layer(
    checkpoint: str | os.PathLike, shard_dir: str | os.PathLike, out_csv: str | os.PathLike, *, study: str,
    dataset: str, model_name: str, layer: str, variant: str, spec: Mapping[str, Any], repeats: int,
    study_seed: int, split: str = "test", batch_size: int = 256, device: str = "auto", progress: bool = True,
    model_source: Mapping[str, Any] | None = None, engine: str = "fast", max_replicas: int | None = None,
) -> pd.DataFrame:  # fmt: skip
    """One job: every level x repeat of fault variant ``variant`` (its config ``spec``:
    ``fault``, ``levels`` and the fault's options) on one layer of one model -> CSV of
    :data:`FAULT_COLUMNS`. A weight bit fault in fp16 / bf16 / int8 acts on the network
    stored in that format (every layer), so level 0 is that network bit for bit.

    Raises:
        ConfigError: a bad variant (:func:`netperturb.studies.faults.plan.make_variant`).
        LayerSelectionError: ``layer`` is not a Conv2d/Linear module path of the model.
    """
    var, pert = make_variant(variant, spec, f"faults.perturbations.{variant}")
    dev = resolve_device(device)
    loaded = in_format(load_model(checkpoint, dev, model_source), var.reference)
    (info,) = select_layers(find_layers(loaded.model), [layer])
    job = LayerJob(study=study, dataset=dataset, model=model_name, layer=info, perturbation=pert,
                   levels=var.levels, repeats=int(repeats), study_seed=int(study_seed))  # fmt: skip
    images, labels = eval_data(shard_dir, split, loaded, dev)
    df = run_layer_job(job, loaded, images, labels, batch_size=batch_size, progress=progress, engine=engine,
                       max_replicas=max_replicas)  # fmt: skip
    df = _describe(df, var)
    write_csv(df, out_csv)
    return df


def _describe(df: pd.DataFrame, var: Variant) -> pd.DataFrame:
    return df.assign(fault=var.fault, target=var.target, format=var.format, bits=var.bits, count=var.count,
                     reference=var.reference)[FAULT_COLUMNS]  # fmt: skip


def merge_faults(
    inputs: Sequence[str | os.PathLike], out_csv: str | os.PathLike, out_parquet: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Concatenate job (or baseline) tables into one tidy table sorted by model, variant,
    layer depth, level, repeat.

    Raises:
        ValueError: no inputs, or an input lacks a column of :data:`FAULT_COLUMNS`.
    """
    return merge_tables(inputs, out_csv, out_parquet, columns=FAULT_COLUMNS,
                        sort_by=["model", "perturbation", "reference", "layer_index", "level", "repeat"])  # fmt: skip
