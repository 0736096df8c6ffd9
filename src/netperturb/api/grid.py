"""A whole perturbation grid on any model and data: :func:`run_grid`."""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Iterable, Mapping

import pandas as pd
import torch
from torch import Tensor, nn

from netperturb.api.metrics import require_eval, model_device
from netperturb.core.layers import LayerInfo, find_layers, select_layers
from netperturb.core.stream import DataSpec, as_stream

__all__ = ["run_grid", "weights_id", "grid_perturbation"]


def weights_id(model: nn.Module) -> str:
    """Provenance id of a model's weights: the first 12 hex digits of sha256 over every
    parameter and buffer (names, dtypes, shapes and bytes, in ``state_dict`` order)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        if not isinstance(t, Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}\x1f{t.dtype}\x1f{tuple(t.shape)}\x1f".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:12]


def grid_perturbation(name: str, spec: Mapping[str, Any]):
    """The perturbation and levels of one entry ``name: spec`` of ``run_grid(perturbations=...)``.

    ``spec`` holds ``levels`` (a list, or the config's ``{start, stop, num}`` / ``{start, stop,
    step}`` mapping, :func:`netperturb.core.config.expand_levels`), optionally ``perturbation``
    (or ``fault``, as in the faults study's config) naming the registered perturbation when
    ``name`` is a variant name of your own (e.g. ``bf_int8: {perturbation: bit_flip, format:
    int8, levels: [...]}``), and the perturbation's options. The name is the ``perturbation``
    column of the table and part of every cell's seed, as in the workflow.

    Returns:
        (perturbation, levels).

    Raises:
        ValueError: no ``levels``, an unknown perturbation or option (the message names
            ``perturbations.<name>``).
    """
    from netperturb.core.config import expand_levels
    from netperturb.perturb.registry import make_perturbation

    key = f"perturbations.{name}"
    if not isinstance(spec, Mapping) or "levels" not in spec:
        raise ValueError(f"{key}: a mapping with levels (and the perturbation's options) expected, got {spec!r}")
    if "perturbation" in spec and "fault" in spec:
        raise ValueError(f"{key}: give either perturbation or fault, not both")
    kind = spec.get("perturbation", spec.get("fault", name))
    options = {k: v for k, v in spec.items() if k not in ("levels", "perturbation", "fault")}
    try:
        pert = make_perturbation(kind, **options)
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None
    levels = expand_levels(spec["levels"], key=f"{key}.levels")
    for lv in levels:
        try:
            pert.check_level(lv)
        except ValueError as e:
            raise ValueError(f"{key}.levels: {e}") from None
    if name != kind:
        pert.name = name  # the variant's name is the perturbation column and enters each cell's seed
    return pert, levels


def _reference_key(pert) -> tuple[str, str, bool]:
    """(format, granularity, include_bias) of the fault-free network a perturbation acts on:
    fp32 except for weight bit faults in fp16 / bf16 / int8 (as the faults study plans it)."""
    from netperturb.perturb.faults import is_activation_fault

    fmt = getattr(pert, "format", "fp32")
    if fmt == "fp32" or is_activation_fault(pert):
        return ("fp32", "tensor", False)
    return (fmt, getattr(pert, "granularity", "tensor"), bool(getattr(pert, "include_bias", False)))


def run_grid(
    model: nn.Module,
    data: DataSpec,
    *,
    perturbations: Mapping[str, Mapping[str, Any]],
    layers: str | Iterable[str | LayerInfo] = "all",
    repeats: int = 5,
    seed: int = 2017,
    engine: str = "fast",
    model_name: str = "model",
    preprocess: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    max_replicas: int | None = None,
    progress: bool = False,
    resume: str | os.PathLike | None = None,
    study: str = "api",
    dataset: str = "data",
    arch: str | None = None,
    weights: str | None = None,
    data_digest: str = "",
) -> pd.DataFrame:
    """Every layer x perturbation x level x repeat cell on ``model`` and ``data``, with the
    workflow's engine, seeds and columns: a tidy table, one row per cell.

    This is what the workflow's perturb jobs compute (one job = one layer x one
    perturbation, :func:`netperturb.perturb.grid.run_layer_job`), for a model and data of
    your own: each cell's seed is ``cell_seed(seed, model_name, layer path, perturbation
    name, level, repeat)`` (:func:`netperturb.cell_seed`), so the same arguments give the
    workflow's numbers cell for cell, whatever the engine, batch size or device, and
    ``netperturb.perturbed(model, row.layer, ..., seed=row.seed)`` rebuilds a row's network.
    Level-0 cells are the clean network. The model is never modified.

    A weight bit fault in ``fp16`` / ``bf16`` / ``int8`` (``bit_flip`` / ``stuck_at`` with
    ``format``) acts, as in the workflow's faults study, on the network stored in that format
    (:func:`netperturb.in_format`, every Conv2d / Linear layer): its level 0 and its SDC
    reference are that network, not the fp32 one.

    Args:
        model: a classifier ``nn.Module`` in ``eval()`` mode, on its device.
        data: a DataLoader (no shuffling), a Dataset of ``(image, label)`` or ``(x, y)``
            tensors (float model inputs, or uint8 with ``preprocess``), read batch by batch
            (:mod:`netperturb.core.stream`): once per clean pass and, when the clean
            activations below a layer do not fit in memory, once per group of replicas.
        perturbations: name -> ``{"levels": [...], **options}`` (:func:`~netperturb.api.grid.grid_perturbation`),
            e.g. ``{"synapse_knockout": {"levels": [0, 0.5, 1]}, "bit_flip": {"levels": [0,
            1e-4], "bits": "exponent"}}``.
        layers: ``"all"``, or module paths / labels / globs (``["conv*", "fc8"]``) or
            :class:`~netperturb.core.layers.LayerInfo` s of :func:`netperturb.layers`.
        repeats: independent draws per level, >= 1.
        seed: the study seed every cell seed derives from (the config's ``seed``).
        engine: ``"fast"`` (clean prefix once per batch, K replicas per suffix call),
            ``"functional"`` or ``"naive"`` (the reference: copy, perturb, full forward per
            cell); all give the same counts in fp32.
        model_name: the model's name in the table and in every cell seed (the config's model key).
        preprocess: uint8 -> model input on the device.
        batch_size: images per batch for a Dataset or tensors (a DataLoader keeps its own).
        device: where the model is (checked; never moved); None: its device.
        precision: ``"fp32"`` (reference), ``"bf16"`` or ``"fp16"`` (autocast; not with naive).
        max_replicas: cap on the fast engine's replicas per suffix call.
        progress: a progress bar per job.
        resume: a CSV path: every finished cell is appended to ``<resume>.partial.jsonl``
            as it is done (:class:`netperturb.core.resume.CellStore`); a call interrupted and
            made again with the same arguments computes only the missing cells; at the end
            the table is written to ``resume`` and the partial file removed.
        study, dataset: the ``study`` and ``dataset`` columns (and the resume fingerprint).
        arch, weights: the ``arch`` and ``weights`` provenance columns (default: the model's
            class name and :func:`~netperturb.api.grid.weights_id`).
        data_digest: the ``data_digest`` provenance column, the evaluation data's id (the
            workflow writes :func:`netperturb.datasets.shards.data_digest` of its shards;
            default ``""``: not recorded).

    Returns:
        pandas DataFrame with :data:`netperturb.perturb.grid.COLUMNS`, layers in depth
        order, then perturbations as given, levels, repeats.

    Raises:
        ValueError: model in training mode, a bad perturbation spec, an unknown engine or
            precision, ``device`` not the model's.
        LayerSelectionError: a layer selection matching nothing (lists what exists).
    """
    from netperturb.core.resume import CellStore, environment
    from netperturb.models.loaded import LoadedModel
    from netperturb.perturb.engine.runners import ENGINES
    from netperturb.perturb.grid import COLUMNS, LayerJob, run_layer_job

    require_eval(model, "run_grid")
    dev = model_device(model, device)
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r} unknown; known: {', '.join(ENGINES)}")
    if int(repeats) < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not perturbations:
        raise ValueError("perturbations: give at least one, e.g. {'synapse_knockout': {'levels': [0, 0.5, 1]}}")
    stream = as_stream(data, preprocess=preprocess, batch_size=batch_size)
    if not isinstance(layers, str):
        layers = [l.path if isinstance(l, LayerInfo) else l for l in layers]
    chosen: list[LayerInfo] = select_layers(find_layers(model), layers)
    if not chosen:
        raise ValueError(f"layers: {type(model).__name__} has no perturbable (Conv2d / Linear) layer")
    perts = {name: grid_perturbation(name, spec) for name, spec in perturbations.items()}
    wid = weights if weights is not None else weights_id(model)
    arch = arch or type(model).__name__
    references: dict[tuple, LoadedModel] = {}

    def loaded_for(pert) -> LoadedModel:
        key = _reference_key(pert)
        if key not in references:
            from netperturb.perturb.faults import format_model

            net = model if key[0] == "fp32" else format_model(model, *key)
            references[key] = LoadedModel(model=net, preprocess=None, arch=arch, weights=wid, meta={})  # type: ignore[arg-type]
        return references[key]

    store = None
    if resume is not None:
        store = CellStore(resume, {
            "job": "netperturb.run_grid", "study": study, "dataset": dataset, "model": model_name, "weights": wid,
            "data": stream.fingerprint(), "layers": [l.path for l in chosen],
            "perturbations": {n: {**dict(s), "levels": [float(v) for v in perts[n][1]]} for n, s in perturbations.items()},
            "repeats": int(repeats), "study_seed": int(seed), "engine": engine, "precision": precision,
            **environment(dev),
        })  # fmt: skip
    frames = []
    for info in chosen:
        for name, (pert, levels) in perts.items():
            job = LayerJob(study=study, dataset=dataset, model=model_name, layer=info, perturbation=pert,
                           levels=levels, repeats=int(repeats), study_seed=int(seed),
                           data_digest=data_digest)  # fmt: skip
            frames.append(run_layer_job(job, loaded_for(pert), stream, None, batch_size=stream.batch_size,
                                        progress=progress, engine=engine, precision=precision,
                                        max_replicas=max_replicas, store=store))  # fmt: skip
    out = pd.concat(frames, ignore_index=True)[COLUMNS]
    if store is not None:
        store.finish(out)
    return out
