"""One perturbation job: one model x one layer x one perturbation, every level x repeat.

This is the unit of work of the workflow's ``cheney2017_perturb`` rule (and of
``shen2021_evaluate``; the Design page of the docs, "Data flow"). The result is a tidy table, one row per
(level, repeat) cell, with the columns of :data:`COLUMNS` (the Design page of the docs, "Result schema").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import pandas as pd
import torch
from torch import Tensor

from netperturb import __version__
from netperturb.core.evaluate import Counts, evaluate
from netperturb.core.layers import LayerInfo
from netperturb.core.resume import CellStore, counts_from_json, counts_to_json
from netperturb.core.seeds import cell_seed
from netperturb.models.loaded import LoadedModel
from netperturb.perturb.base import Perturbation

__all__ = ["COLUMNS", "LayerJob", "run_layer_job", "baseline_table", "layer_params"]

#: Column order of every perturbation / baseline table. ``sdc1``, ``sdc5``, ``due``: the resilience
#: metrics against the clean network (:func:`netperturb.core.evaluate.resilience_parts`).
#: Provenance: ``weights`` (the weights' id), ``data_digest`` (the evaluation data's id,
#: :func:`netperturb.datasets.shards.split_digest`; empty when the images did not come from
#: shards), ``precision``, ``device``, ``netperturb_version``.
COLUMNS = [
    "study", "dataset", "model", "arch", "layer", "layer_label", "layer_index",
    "perturbation", "level", "repeat", "seed", "n_images", "top1", "top5", "loss", "sdc1", "sdc5", "due",
    "weights", "data_digest", "precision", "device", "netperturb_version",
]  # fmt: skip


@dataclass
class LayerJob:
    """What one perturbation job computes.

    Attributes:
        study, dataset, model: names as in the config (``model`` is the config's model key).
        layer: the layer to perturb.
        perturbation: a :class:`~netperturb.perturb.base.Perturbation`.
        levels: levels to sweep (units: the perturbation's ``level_unit``).
        repeats: independent draws per level (>= 1).
        study_seed: the config's ``seed``; each cell's seed derives from it
            (:func:`netperturb.core.seeds.cell_seed`).
        data_digest: the evaluation data's id for the ``data_digest`` column
            (:func:`netperturb.datasets.shards.split_digest`; ``""`` when unknown).
    """

    study: str
    dataset: str
    model: str
    layer: LayerInfo
    perturbation: Perturbation
    levels: Sequence[float]
    repeats: int
    study_seed: int
    extra: dict = field(default_factory=dict)
    data_digest: str = ""

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        self.levels = [self.perturbation.check_level(lv) for lv in self.levels]

    def cell_key(self, level: float, repeat: int) -> tuple:
        """What identifies a cell in a :class:`~netperturb.core.resume.CellStore`:
        (layer path, perturbation name, level, repeat)."""
        return (self.layer.path, self.perturbation.name, float(level), int(repeat))

    def cells(self) -> Iterator[tuple[float, int, int]]:
        """(level, repeat, seed) for every cell, levels outer."""
        for level in self.levels:
            for repeat in range(self.repeats):
                seed = cell_seed(
                    self.study_seed, self.model, self.layer.path, self.perturbation.name, level, repeat
                )
                yield level, repeat, seed


def layer_params(model: torch.nn.Module, layer: LayerInfo) -> dict[str, Tensor]:
    """role -> the model's own tensor (``weight``, ``bias``, ``bn_weight``, ``bn_bias``)."""
    named = dict(model.named_parameters())
    return {role: named[name] for role, name in layer.param_names().items() if name in named}


def _row(
    job: LayerJob, loaded: LoadedModel, level: float, repeat: int, seed: int, counts: Counts, device: str,
    precision: str = "fp32",
) -> dict:
    return {
        "study": job.study,
        "dataset": job.dataset,
        "model": job.model,
        "arch": loaded.arch,
        "layer": job.layer.path,
        "layer_label": job.layer.label,
        "layer_index": job.layer.index,
        "perturbation": job.perturbation.name,
        "level": level,
        "repeat": repeat,
        "seed": seed,
        **counts.metrics(),
        **counts.resilience(),
        "weights": loaded.weights,
        "data_digest": job.data_digest,
        "precision": precision,
        "device": device,
        "netperturb_version": __version__,
    }


def run_layer_job(
    job: LayerJob,
    loaded: LoadedModel,
    images,
    labels: Tensor | None = None,
    *,
    batch_size: int = 256,
    progress: bool = True,
    engine: str = "fast",
    precision: str = "fp32",
    max_replicas: int | None = None,
    store: CellStore | None = None,
) -> pd.DataFrame:
    """Evaluate every (level, repeat) cell of ``job`` on ``images`` (uint8 (N, C, H, W),
    preprocessed by ``loaded.preprocess``) and ``labels`` (N,); or, with ``labels=None``, on
    ``images`` as any data :func:`netperturb.perturb.engine.runners.data_stream` takes (an
    :class:`~netperturb.core.stream.ImageStream`, a DataLoader, a Dataset), read batch by batch.

    Each cell: draw the perturbed layer tensors from the cell's own CPU generator and
    evaluate the network with them (the loaded model is never modified). Cells whose
    perturbation changes nothing (level 0) share one clean evaluation of the whole model,
    which is what they are by definition.

    Args:
        engine: how (:mod:`netperturb.perturb.engine`): ``"fast"`` (default: the clean prefix of
            the network below the layer computed once per batch, K perturbed replicas per
            suffix call), ``"functional"`` (the whole network per cell via
            ``functional_call``) or ``"naive"`` (the reference: deepcopy, perturb in place,
            full forward per cell). All three give the same counts in fp32.
        precision: ``"fp32"`` (reference), ``"bf16"`` or ``"fp16"`` (autocast; the perturbed
            layer itself in fp32); recorded in the ``precision`` column.
        max_replicas: cells per suffix call of the fast engine, memory permitting (None: the
            engine's cost model chooses, :mod:`netperturb.perturb.engine.costs`).
        store: cell-level resume (:mod:`netperturb.core.resume`): cells found there
            (:meth:`LayerJob.cell_key`) are not computed again, and every finished cell (or
            group of cells) is recorded there as soon as it is done. The fast engine's replica
            count is recorded too and reused as a cap after a restart, so the resumed cells
            are computed in the same groups as an uninterrupted run would.

    Returns:
        DataFrame with :data:`COLUMNS`, one row per cell, levels outer, repeats inner.

    Raises:
        ValueError: unknown engine or precision.
    """
    from netperturb.perturb.engine.runners import run_cells

    device = str(next(loaded.model.parameters()).device)
    if store is None:
        counts = run_cells(
            job, loaded, images, labels, engine=engine, batch_size=batch_size, precision=precision,
            max_replicas=max_replicas, progress=progress,
        )  # fmt: skip
    else:
        counts = _resumable_cells(job, loaded, images, labels, store, engine=engine, batch_size=batch_size,
                                  precision=precision, max_replicas=max_replicas, progress=progress)  # fmt: skip
    rows = [
        _row(job, loaded, level, repeat, seed, c, device, precision)
        for (level, repeat, seed), c in zip(job.cells(), counts)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def _resumable_cells(job: LayerJob, loaded: LoadedModel, images, labels: Tensor | None, store: CellStore, *,
                     max_replicas: int | None, **kw) -> list[Counts]:  # fmt: skip
    """:func:`~netperturb.perturb.engine.runners.run_cells` computing only the cells missing
    from ``store`` and recording each finished one there; the counts of every cell."""
    from netperturb.perturb.engine.runners import FastPlan, run_cells

    keys = [job.cell_key(level, repeat) for level, repeat, _ in job.cells()]
    skip = {i for i, key in enumerate(keys) if key in store}
    note = f"replicas {job.layer.path} {job.perturbation.name}"
    if store.notes.get(note):  # the replica count of the interrupted run, as a cap
        max_replicas = min(int(store.notes[note]), max_replicas or int(store.notes[note]))
    plan = FastPlan()

    def on_cells(indices: list[int], counts: list[Counts]) -> None:
        if kw.get("engine") == "fast" and plan.fallback is None:
            store.note(**{note: plan.replicas})
        store.put((keys[i], counts_to_json(c)) for i, c in zip(indices, counts))

    if len(skip) < len(keys):
        got = run_cells(job, loaded, images, labels, max_replicas=max_replicas, skip=skip, on_cells=on_cells, plan=plan, **kw)
        store.put((keys[i], counts_to_json(c)) for i, c in enumerate(got) if c is not None)  # cells no callback saw
    return [counts_from_json(store.get(key)) for key in keys]


def baseline_table(
    loaded: LoadedModel,
    images: Tensor,
    labels: Tensor,
    *,
    study: str,
    dataset: str,
    model: str,
    study_seed: int,
    batch_size: int = 256,
    store: CellStore | None = None,
    data_digest: str = "",
) -> pd.DataFrame:
    """The unperturbed network as one row of :data:`COLUMNS` (perturbation ``none``, layer
    ``""``, level 0, repeat 0); with ``store``, taken from / recorded in it as the cell
    ``("", "none", 0.0, 0)`` (cell-level resume, :mod:`netperturb.core.resume`).
    ``data_digest``: the ``data_digest`` column (the images' id, :func:`netperturb.datasets.shards.split_digest`)."""

    def clean() -> Counts:
        return evaluate(loaded.model, images, labels, loaded.preprocess, batch_size=batch_size)

    if store is None:
        counts = clean()
    else:
        counts = counts_from_json(store.compute(("", "none", 0.0, 0), lambda: counts_to_json(clean())))
    row = {
        "study": study,
        "dataset": dataset,
        "model": model,
        "arch": loaded.arch,
        "layer": "",
        "layer_label": "",
        "layer_index": 0,
        "perturbation": "none",
        "level": 0.0,
        "repeat": 0,
        "seed": int(study_seed),
        **counts.metrics(),
        **counts.resilience(),
        "weights": loaded.weights,
        "data_digest": data_digest,
        "precision": "fp32",
        "device": str(next(loaded.model.parameters()).device),
        "netperturb_version": __version__,
    }
    return pd.DataFrame([row], columns=COLUMNS)
