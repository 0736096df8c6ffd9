"""Filter sweeps of Pravin et al. 2024: per-layer and whole-network sweeps over thresholds, each point evaluated on clean and adversarial images."""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import pandas as pd
from torch import Tensor, nn
from tqdm import tqdm  # plain tqdm: tqdm.auto in a notebook kernel warns (IProgress) without ipywidgets

from netperturb import __version__
from netperturb.core.evaluate import Counts
from netperturb.core.layers import LayerInfo
from netperturb.core.resume import CellStore
from netperturb.core.seeds import cell_seed
from netperturb.perturb.engine.graph import SplitError
from netperturb.perturb.filters import alpha_grid, make_filter, weight_range
from netperturb.studies.pravin2024.batched import BatchedSweep, batchable
from netperturb.studies.pravin2024.evaluator import AttackSpec, Evaluator
from netperturb.studies.pravin2024.images import counts_from_stored, counts_json, encode_credits
from netperturb.studies.pravin2024.prefix import PrefixReuse

log = logging.getLogger("netperturb")

__all__ = ["SWEEP_COLUMNS", "layer_sweep", "network_sweep", "network_overrides", "baseline_rows", "sweep_frame"]


#: Columns of the sweep and baseline tables (one row per point and data set).
SWEEP_COLUMNS = [
    "study", "dataset", "model", "arch", "init", "epoch", "mode", "layer", "layer_label", "layer_index",
    "perturbation", "level", "position", "step", "lo", "hi", "n_weights", "n_filtered",
    "data", "attack", "eps", "attack_mode", "repeat", "seed", "n_images", "top1", "top5", "loss",
    "top1_images", "top5_images", "weights", "data_digest", "precision", "device", "netperturb_version",
]  # fmt: skip
#: ``top1_images`` / ``top5_images``: every evaluation image's credit at the point, encoded
#: (:func:`netperturb.studies.pravin2024.images.encode_credits`): what the bootstrap over images
#: of the filtering scores resamples (:mod:`netperturb.studies.pravin2024.intervals`).


def _point_rows(base: dict, counts: tuple[Counts, Counts], attack: AttackSpec) -> list[dict]:
    rows = []
    for data, c in zip(("clean", "adversarial"), counts):
        rows.append({**base, "data": data, "attack": attack.name, "eps": attack.eps, "attack_mode": attack.mode,
                     "repeat": 0, **c.metrics(), "top1_images": encode_credits(c, "top1"),
                     "top5_images": encode_credits(c, "top5")})  # fmt: skip
    return rows


def _point(ev: Evaluator, store: CellStore | None, key: tuple, overrides, masks, seed: int, compute=None):
    """``ev(overrides, masks, seed, compute)`` with cell-level resume: a point found in
    ``store`` is not evaluated again, its stored counts enter the evaluator's cache in its place
    (so a later point with the same zero set gets exactly the counts it got in the
    uninterrupted run); a point computed here is recorded in ``store`` at once."""
    if store is None:
        return ev(overrides, masks, seed, compute)
    if key in store:
        stored = tuple(counts_from_stored(d) for d in store.get(key))
        return ev(overrides, masks, seed, lambda: stored)
    counts = ev(overrides, masks, seed, compute)
    store.put([(key, [counts_json(c) for c in counts])])
    return counts


def _named(model: nn.Module) -> dict[str, Tensor]:
    return dict(model.named_parameters())


class _Chunks:
    """The points of a layer sweep that must be computed (in sweep order), evaluated K at a
    time by a :class:`BatchedSweep` when the first of a chunk is asked for."""

    def __init__(self, sweep: BatchedSweep, todo: list[tuple[int, str]], keys: list[str], point, weight: Tensor):
        self.sweep, self.todo, self.keys, self._point, self.weight = sweep, todo, keys, point, weight
        self.pos = 0
        self.done: dict[str, tuple[Counts, Counts]] = {}
        self._made: dict[int, tuple] = {}  # point -> (mask, new, seed) made for a chunk, until the sweep reads it

    def point(self, j: int) -> tuple:
        """``point(j)`` of the sweep, made once for the points a chunk computed."""
        return self._made.pop(j) if j in self._made else self._point(j)

    def weight_of(self, j: int) -> Tensor:
        self._made[j] = self._point(j)
        new = self._made[j][1]
        return self.weight if new is None else new

    def counts_of(self, key: str):
        def compute() -> tuple[Counts, Counts]:
            if key not in self.done:
                chunk = self.todo[self.pos : self.pos + self.sweep.k]
                if not chunk or chunk[0][1] != key:
                    raise RuntimeError("batched sweep: points asked for out of plan order")
                self.pos += len(chunk)
                counts = self.sweep.counts([self.weight_of(j) for j, _ in chunk])
                self.done.update({kk: c for (_, kk), c in zip(chunk, counts)})
            return self.done.pop(key)

        return compute


def _batched(ev: Evaluator, layer: LayerInfo, grid, w64: Tensor, point, store_key, store: CellStore | None,
             max_replicas: int):  # fmt: skip
    """The :class:`_Chunks` of a layer sweep, or None where points run one at a time
    (``max_replicas`` 1, PGD ``regenerate``, nothing to compute). The plan replays :func:`_point`'s resume and the Evaluator's
    cache: a point is computed iff it is not in ``store``, its zero set (cache key) was not
    computed or stored earlier in the sweep, and it is not in the cache already.

    Raises:
        SplitError: the graph cannot be cut at the layer."""
    if max_replicas == 1 or not batchable(ev):
        return None
    todo, seen, keys = [], set(), []
    for j, (flt, _, alpha, _) in enumerate(grid):
        mask = flt.mask(w64, alpha)
        key = ev.key({f"{layer.path}.weight": mask}, cell_seed(ev.study_seed, ev.model_key, layer.path, flt.name, alpha, 0))
        keys.append(key)
        if store is not None and store_key(j) in store:
            seen.add(key)
        elif key not in seen and not ev.known(key):
            seen.add(key)
            todo.append((j, key))
    if not todo:
        return None
    sweep = BatchedSweep(ev, layer, max_replicas, len(todo))
    return _Chunks(sweep, todo, keys, point, _named(ev.model)[f"{layer.path}.weight"])


def layer_sweep(
    ev: Evaluator,
    layer: LayerInfo,
    filters: Sequence[str],
    steps: int,
    *,
    row: Mapping[str, Any] | None = None,
    progress: bool = True,
    bar: tqdm | None = None,
    reuse_prefix: bool = True,
    store: CellStore | None = None,
    max_replicas: int = 4,
    pulse_steps: int | None = None,
) -> list[dict]:
    """Per-layer mode: every filter in ``filters`` swept over ``steps`` points of this layer's
    weight range ``[min, max]`` (:func:`netperturb.perturb.filters.alpha_grid`); the other layers are
    untouched.

    Args:
        ev: the :class:`Evaluator` of the checkpoint.
        layer: the Conv2d / Linear layer filtered.
        filters: ``low``, ``high``, ``pulse``.
        steps: S points per filter.
        row: values for the provenance columns (study, model, ...).
        progress: show a progress bar (one per call) unless ``bar`` is given.
        bar: a progress bar to advance by one per point (a job sweeping several layers
            shows one bar).
        reuse_prefix: evaluate through :class:`PrefixReuse` (same counts, less arithmetic);
            if the graph cannot be cut at the layer, the generic path is used and a
            warning is logged.
        store: cell-level resume (:mod:`netperturb.core.resume`): points stored there
            (key ``("layer", layer path, filter name, step, alpha)``) are not evaluated
            again; every point evaluated is recorded there.
        max_replicas: with ``reuse_prefix``, evaluate up to this many points at once as
            replicas of the layer (:class:`~netperturb.studies.pravin2024.batched.BatchedSweep`;
            FGSM in both modes, PGD in ``reuse`` mode; K also bounded by free memory);
            1 = one point at a time through :class:`PrefixReuse`. Same numbers either way.
            Points whose zero set was already evaluated (the Evaluator's cache, or ``store``)
            are not evaluated again.
        pulse_steps: the S that sets the pulse filter's half-width, ``(max - min) / (2 S)``
            (:func:`netperturb.perturb.filters.pulse_half_width`); None = ``steps`` (the
            authors' code). With ``steps = 13`` and ``pulse_steps = 25`` the sweep is every
            other point of the paper's 25-point sweep, the pulse band included.

    Returns:
        rows of :data:`SWEEP_COLUMNS` (minus the provenance ones given in ``row``): two per
        point (``data`` clean and adversarial), filters in the given order, points in sweep
        order.

    Raises:
        ValueError: ``max_replicas`` < 1.
    """
    if max_replicas < 1:
        raise ValueError(f"layer_sweep: max_replicas must be >= 1, got {max_replicas}")
    name = f"{layer.path}.weight"
    weight = _named(ev.model)[name]
    w64 = weight.detach().double()  # the filters compare in float64; converted once
    lo, hi = weight_range(weight)
    grid = []  # (filter, step, alpha, position) in sweep order
    for kind in filters:
        flt = make_filter(kind, lo=lo, hi=hi, steps=pulse_steps or steps)
        alphas, positions = alpha_grid(kind, lo, hi, steps)
        grid += [(flt, i, alpha, pos) for i, (alpha, pos) in enumerate(zip(alphas, positions))]

    def point(j: int):
        flt, i, alpha, _ = grid[j]
        mask = flt.mask(w64, alpha)
        new = flt.zeroed(weight, mask) if bool(mask.any()) else None
        return mask, new, cell_seed(ev.study_seed, ev.model_key, layer.path, flt.name, alpha, 0)

    def store_key(j: int) -> tuple:
        flt, i, alpha, _ = grid[j]
        return ("layer", layer.path, flt.name, i, float(alpha))

    batch = path = None
    if reuse_prefix:
        try:
            batch = _batched(ev, layer, grid, w64, point, store_key, store, max_replicas)
            if batch is None:
                path = PrefixReuse(ev, layer)
        except SplitError as e:
            log.warning("%s: no clean-prefix reuse for %s, whole network per point (%s)", ev.model_key, layer.path, e)
    rows: list[dict] = []
    own = bar is None
    if own:
        bar = tqdm(total=len(filters) * steps, desc=f"{ev.model_key}:{layer.label}", disable=not progress, mininterval=5)
    for j, (flt, i, alpha, pos) in enumerate(grid):
        mask, new, seed = batch.point(j) if batch is not None else point(j)
        compute = None
        if batch is not None:
            compute = batch.counts_of(batch.keys[j])
        elif path is not None:
            compute = lambda: path.counts(weight if new is None else new, seed)  # noqa: E731
        counts = _point(ev, store, store_key(j), {} if new is None else {name: new}, {name: mask}, seed, compute)
        base = {**(row or {}), "mode": "layer", "layer": layer.path, "layer_label": layer.label,
                "layer_index": layer.index, "perturbation": flt.name, "level": float(alpha),
                "position": float(pos), "step": i, "lo": lo, "hi": hi, "n_weights": weight.numel(),
                "n_filtered": int(mask.sum()), "seed": seed}  # fmt: skip
        rows += _point_rows(base, counts, ev.attack)
        bar.update()
    if own:
        bar.close()
    return rows


def network_sweep(
    ev: Evaluator,
    layers: Sequence[LayerInfo],
    filters: Sequence[str],
    steps: int,
    *,
    grid: tuple[float, float] | None = None,
    row: Mapping[str, Any] | None = None,
    progress: bool = True,
    store: CellStore | None = None,
    pulse_steps: int | None = None,
) -> list[dict]:
    """Whole-network mode: one threshold of a shared grid applied to the weights of *every*
    layer in ``layers`` at once (all of them written back).

    Args:
        grid: ``(lo, hi)`` of the shared grid; None = the range of all those layers' weights
            together (the authors' code used a fixed [-1, 1]; configurable).
        store: cell-level resume as in :func:`layer_sweep` (key ``("network", "all", filter
            name, step, alpha)``).
        pulse_steps: the S of the pulse half-width, as in :func:`layer_sweep`.

    Returns:
        rows as :func:`layer_sweep`, with ``mode="network"``, ``layer="all"``,
        ``layer_index=0`` and ``n_filtered`` / ``n_weights`` summed over the layers.
    """
    named = _named(ev.model)
    names = [f"{l.path}.weight" for l in layers]
    weights = [named[n] for n in names]
    weights64 = [w.detach().double() for w in weights]
    lo, hi = grid if grid is not None else weight_range(weights)
    rows: list[dict] = []
    bar = tqdm(total=len(filters) * steps, desc=f"{ev.model_key}:network", disable=not progress, mininterval=5)
    for kind in filters:
        flt = make_filter(kind, lo=lo, hi=hi, steps=pulse_steps or steps)
        alphas, positions = alpha_grid(kind, lo, hi, steps)
        for i, (alpha, pos) in enumerate(zip(alphas, positions)):
            overrides, masks, n_filtered = {}, {}, 0
            for n, w, w64 in zip(names, weights, weights64):
                masks[n] = flt.mask(w64, alpha)
                n_filtered += int(masks[n].sum())
                if bool(masks[n].any()):
                    overrides[n] = flt.zeroed(w, masks[n])
            seed = cell_seed(ev.study_seed, ev.model_key, "all", flt.name, alpha, 0)
            counts = _point(ev, store, ("network", "all", flt.name, i, float(alpha)), overrides, masks, seed)
            base = {**(row or {}), "mode": "network", "layer": "all", "layer_label": "all", "layer_index": 0,
                    "perturbation": flt.name, "level": float(alpha), "position": float(pos), "step": i,
                    "lo": float(lo), "hi": float(hi), "n_weights": sum(w.numel() for w in weights),
                    "n_filtered": n_filtered, "seed": seed}  # fmt: skip
            rows += _point_rows(base, counts, ev.attack)
            bar.update()
    bar.close()
    return rows


def network_overrides(model: nn.Module, layers: Sequence[LayerInfo], kind: str, alpha: float, *,
                      lo: float, hi: float, steps: int) -> dict[str, Tensor]:
    """The filtered weights of every layer in ``layers`` at one threshold of the shared grid
    ``[lo, hi]`` (whole-network mode): full parameter name -> new tensor, for every layer
    whose zero set is not empty."""
    named = _named(model)
    flt = make_filter(kind, lo=lo, hi=hi, steps=steps)
    out = {}
    for l in layers:
        new = flt({"weight": named[f"{l.path}.weight"]}, alpha)
        if new:
            out[f"{l.path}.weight"] = new["weight"]
    return out


def baseline_rows(ev: Evaluator, row: Mapping[str, Any] | None = None) -> list[dict]:
    """The unfiltered network: two rows (clean, adversarial) with ``mode="none"``,
    ``perturbation="none"``, ``level=0``."""
    seed = cell_seed(ev.study_seed, ev.model_key, "", "none", 0.0, 0)
    counts = ev({}, {}, seed)
    base = {**(row or {}), "mode": "none", "layer": "", "layer_label": "", "layer_index": 0, "perturbation": "none",
            "level": 0.0, "position": 0.0, "step": 0, "lo": math.nan, "hi": math.nan, "n_weights": 0,
            "n_filtered": 0, "seed": seed}  # fmt: skip
    return _point_rows(base, counts, ev.attack)


def sweep_frame(rows: Sequence[Mapping[str, Any]], *, precision: str = "fp32", device: str = "cpu") -> pd.DataFrame:
    """Rows -> DataFrame with :data:`SWEEP_COLUMNS` (provenance filled in)."""
    df = pd.DataFrame(list(rows))
    df["precision"] = precision
    df["device"] = device
    df["netperturb_version"] = __version__
    for c in SWEEP_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    return df[SWEEP_COLUMNS]
