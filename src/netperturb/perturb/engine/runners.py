"""The three ways to compute a job (``fast``, ``functional``, ``naive``) and :func:`run_cells`, which picks one; see :mod:`netperturb.perturb.engine`."""

from __future__ import annotations

import concurrent.futures as cf
import copy
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterable

import torch
from torch import Tensor, nn
from tqdm import tqdm  # plain tqdm: tqdm.auto in a notebook kernel warns (IProgress) without ipywidgets

from netperturb.core.evaluate import Counts, count_logits, evaluate_stream, reference_masks
from netperturb.core.layers import LayerInfo
from netperturb.core.stream import ImageStream, TensorStream, as_stream, n_batches
from netperturb.core.seeds import cell_generator
from netperturb.perturb.base import ENTRIES, OUTPUT, ROWS, Perturbation
from netperturb.perturb.engine.costs import cost_replicas
from netperturb.perturb.engine.graph import _bn_stats, widen_roles
from netperturb.perturb.engine.hooks import check_output_hook, find_split, output_module
from netperturb.perturb.engine.precision import (
    _channels_last,
    check_precision,
    precision_context,
)
from netperturb.perturb.engine.replicas import (
    ReplicaBuilder,
    _replica_counts,
    _to_counts,
    available_memory,
    choose_replicas,
)

log = logging.getLogger("netperturb")

__all__ = ["ENGINES", "OnCells", "data_stream", "run_functional", "naive_cells", "run_naive", "FastPlan", "run_fast", "run_cells"]

#: Called as ``on_cells(indices, counts)`` whenever cells of ``job.cells()`` (by index) are
#: finished, e.g. to checkpoint them (:class:`netperturb.core.resume.CellStore`).
OnCells = Callable[[list[int], list[Counts]], None]


#: Ways to compute a job (see the module docstring).
ENGINES = ("fast", "functional", "naive")


# --------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------


def _layer_params(model: nn.Module, layer: LayerInfo) -> dict[str, Tensor]:
    named = dict(model.named_parameters())
    return {role: named[name] for role, name in layer.param_names().items() if name in named}


def data_stream(images, labels: Tensor | None = None, preprocess=None, batch_size: int = 256) -> ImageStream:
    """The engines' data: uint8 ``images`` (N, C, H, W) with ``labels`` (N,) and ``preprocess``
    as a :class:`~netperturb.core.stream.TensorStream` in batches of ``batch_size`` (the
    workflow's in-memory shards); with ``labels=None``, ``images`` is anything
    :func:`~netperturb.core.stream.as_stream` takes (an :class:`~netperturb.core.stream.ImageStream`,
    a DataLoader, a Dataset, ``(x, y)``)."""
    if labels is None:
        return as_stream(images, preprocess=preprocess, batch_size=batch_size)
    return TensorStream(images, labels, preprocess, batch_size)


def _clean_counts(model, stream: ImageStream, precision) -> Counts:
    """The whole unperturbed model; in fp32 exactly :func:`netperturb.core.evaluate.evaluate_stream`."""
    if precision == "fp32":
        return evaluate_stream(model, stream)
    device = next(model.parameters()).device
    total = Counts()
    with torch.inference_mode(), precision_context(device, precision):
        for b in stream.batches(device):
            x = b.x
            if _channels_last(device, precision):
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)
            total += count_logits(logits, b.y, logits)
    return total


def run_functional(
    job, model: nn.Module, images, labels: Tensor | None = None, preprocess=None, *,
    batch_size: int = 256, precision: str = "fp32", progress: bool = True,
    skip: Collection[int] = (), on_cells: OnCells | None = None,
) -> list[Counts | None]:  # fmt: skip
    """Per cell, the whole network with the perturbed tensors swapped in
    (``torch.func.functional_call``); level-0 cells share one clean evaluation.

    The data: uint8 ``images`` (N, C, H, W), ``labels`` (N,) and ``preprocess``, or with
    ``labels=None`` any data :func:`data_stream` takes (read once per cell).
    ``skip``: indices of cells not to compute (finished earlier; None in the result);
    ``on_cells`` is called after each cell.

    Activation faults run the whole network with a forward hook on the layer's output
    (:func:`netperturb.perturb.engine.activations.run_hooked`).

    Returns:
        One :class:`Counts` per cell of ``job.cells()``, in that order.
    """
    stream = data_stream(images, labels, preprocess, batch_size)
    if job.perturbation.changes == OUTPUT:
        from netperturb.perturb.engine.activations import run_hooked

        return run_hooked(job, model, stream, precision=precision, progress=progress, skip=skip, on_cells=on_cells)
    params = _layer_params(model, job.layer)
    names = job.layer.param_names()
    device = next(model.parameters()).device
    clean: Counts | None = None
    out = []
    cells = list(job.cells())
    for i, (level, _repeat, seed) in enumerate(tqdm(cells, desc=_desc(job), disable=not progress, mininterval=5)):
        if i in skip:
            out.append(None)
            continue
        new = job.perturbation(params, level, cell_generator(seed))
        if not new:
            if clean is None:
                clean = _clean_counts(model, stream, precision)
            out.append(clean)
        else:
            overrides = {names[role]: t for role, t in new.items()}
            with precision_context(device, precision):
                out.append(evaluate_stream(model, stream, overrides=overrides))
        if on_cells is not None:
            on_cells([i], [out[-1]])
    return out


def naive_cells(
    job,
    model: nn.Module,
    batches: Callable[[], Iterable[tuple[Tensor, Tensor]]],
    *,
    progress: bool = True,
    on_cell: Callable[[int], None] | None = None,
    skip: Collection[int] = (),
    on_cells: OnCells | None = None,
) -> list[Counts | None]:
    """The naive reference loop over ``job``'s cells, as the seeds' authors and PyTorchFI
    users run a grid: per cell, ``copy.deepcopy(model)``, perturb the copy in place with
    ``job.perturbation``, and run the full forward pass over ``batches()`` (a fresh
    iteration per cell: pre-processed (x, y) pairs, e.g. a DataLoader that decodes the
    JPEGs again every time). fp32, no reuse of anything between cells, except the clean
    ("golden") predictions the SDC metrics compare with: computed once, on the first pass.
    Activation faults: a forward hook on the copy's layer output (after its BatchNorm when
    one follows), fed each batch's image indices in iteration order. ``skip``: indices of
    cells not to compute (None in the result); ``on_cell(i)`` / ``on_cells([i], [counts])``
    are called after each cell.

    Returns:
        One :class:`Counts` per cell of ``job.cells()``, in that order.
    """
    device = next(model.parameters()).device
    out = []
    golden: list[Tensor] = []
    activation = job.perturbation.changes == OUTPUT
    for i, (level, _repeat, seed) in enumerate(
        tqdm(list(job.cells()), desc=_desc(job) + " (naive)", disable=not progress, mininterval=5)
    ):
        if i in skip:
            out.append(None)
            continue
        net = copy.deepcopy(model)
        params = _layer_params(net, job.layer)
        hook = None
        offset, fired = [0], [0]
        if activation:
            def fault(_m, _inp, y, level=level, seed=seed):
                index = torch.arange(offset[0], offset[0] + y.shape[0])
                fired[0] += 1
                return job.perturbation.apply_activation(y, level, seed, index)

            hook = output_module(net, job.layer).register_forward_hook(fault)
        with torch.no_grad():
            for role, t in job.perturbation(params, level, cell_generator(seed)).items():
                params[role].copy_(t)
            counts = Counts()
            for bi, (x, y) in enumerate(batches()):
                x = x.to(device)
                if bi == len(golden):
                    golden.append(model(x))
                counts += count_logits(net(x), y.to(device), golden[bi])
                offset[0] += y.shape[0]
        if hook is not None:
            hook.remove()
            if offset[0]:
                check_output_hook(job.layer, fired[0])
        out.append(counts)
        del net
        if on_cell is not None:
            on_cell(i)
        if on_cells is not None:
            on_cells([i], [counts])
    return out


def run_naive(
    job, model: nn.Module, images, labels: Tensor | None = None, preprocess=None, *, batch_size: int = 256,
    progress: bool = True, skip: Collection[int] = (), on_cells: OnCells | None = None,
) -> list[Counts | None]:  # fmt: skip
    """:func:`naive_cells` on uint8 ``images`` (N, C, H, W) with ``labels`` and ``preprocess``,
    normalised per batch per cell; or with ``labels=None`` on any data :func:`data_stream`
    takes (read once per cell)."""
    device = next(model.parameters()).device
    stream = data_stream(images, labels, preprocess, batch_size)

    def batches():
        for b in stream.batches(device):
            yield b.x, b.y

    return naive_cells(job, model, batches, progress=progress, skip=skip, on_cells=on_cells)


def _desc(job) -> str:
    return f"{job.model}:{job.layer.label}:{job.perturbation.name}"


@dataclass
class FastPlan:
    """What :func:`run_fast` decided (for logs and the benchmark)."""

    replicas: int = 1
    cached_prefix: bool = False
    fallback: str | None = None
    draw_workers: int = 0
    draw_seconds: float = 0.0  # main-thread time spent drawing / waiting for draws and building replicas
    deduplicated: int = 0  # cells copied from an identical cell (seed-independent perturbation)
    reuse_clean_unit: bool = False  # node knockout: clean layer output, knocked channels zeroed
    paths: dict = field(default_factory=dict)  # entries perturbations: cells per path (delta, inplace, dense, clean)
    path: str = ""  # "graph" (torch.fx split), "hooks" (hook path) or "functional" (fallback)
    exact: bool = False  # the suffix ran once per replica (bit for bit the naive loop)


#: How the log names each path of :func:`run_fast`.
_PATH_TEXT = {
    "graph": "graph split (torch.fx): prefix once per batch, K replicas per suffix call",
    "hooks": "hook path (the model does not split with torch.fx): prefix once per batch, K replicas per suffix call",
}


def run_fast(
    job,
    model: nn.Module,
    images,
    labels: Tensor | None = None,
    preprocess=None,
    *,
    batch_size: int = 256,
    precision: str = "fp32",
    max_replicas: int | None = None,
    memory_fraction: float = 0.5,
    draw_workers: int | None = None,
    progress: bool = True,
    plan: FastPlan | None = None,
    skip: Collection[int] = (),
    on_cells: OnCells | None = None,
    path: str = "auto",
    exact: bool | None = None,
) -> list[Counts | None]:
    """The fast engine (module docstring): prefix once per batch, K replicas per suffix call.

    Args:
        job: a :class:`netperturb.perturb.grid.LayerJob`.
        model: in eval mode, on its device.
        images: uint8 (N, C, H, W); labels: int64 (N,); preprocess: uint8 -> model input
            (on the device). With ``labels=None``, ``images`` is any data
            :func:`data_stream` takes (an :class:`~netperturb.core.stream.ImageStream`, a
            DataLoader, a Dataset): it is read batch by batch, once for the clean reference
            and, unless the prefix outputs of every batch fit in memory (then they are
            cached), once per group of replicas.
        batch_size: images per prefix call for in-memory images (the suffix sees K times
            as many); a DataLoader keeps its own.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        max_replicas: K, memory permitting (None: the cost model's K,
            :func:`netperturb.perturb.engine.costs.cost_replicas`, within the memory).
        memory_fraction: share of the free memory for replicas and the prefix cache.
        draw_workers: threads drawing cells (each cell has its own generator, so they
            draw in parallel) while the device computes the previous group; 0 draws in the
            main thread. Default: torch's intra-op thread count on the CPU (a job whose time
            goes into drawing masks, e.g. synapse knockout of a large dense layer, then uses
            every core it was given); with a GPU none for the built-in perturbations (their
            counter-based draws are kernels queued on the device,
            :mod:`netperturb.perturb.draws`), else up to 8 of the usable cores.
        plan: filled with the decisions taken.
        skip: indices of cells not to compute (finished earlier; None in the result). The
            replica groups are formed over *all* cells as without ``skip`` and a group is
            left out only when all its cells are in ``skip`` (a group with a missing cell runs
            whole, its skipped cells included), so every computed cell is computed in the same
            group as in a run without ``skip`` (same numbers).
        on_cells: called with the indices and counts of the cells finished, after the clean
            evaluation and after each group.
        path: how the network is cut at the layer: ``"auto"`` (the torch.fx graph split, else
            the hook path, :mod:`netperturb.perturb.engine.hooks`), ``"graph"`` or ``"hooks"``;
            a network neither cuts takes the functional engine. The log and ``plan.path`` say
            which was taken and why.
        exact: run the suffix once per replica on its own B rows, so that every cell's
            logits equal the naive loop's bit for bit
            (:meth:`~netperturb.perturb.engine.units.LayerSplit.run_suffix`); False: one
            suffix call on the K-fold batch (faster on a GPU; the last bits of a logit may
            differ). Default: True on the CPU, False on a GPU.

    Returns:
        One :class:`Counts` per cell of ``job.cells()``, in that order.

    Raises:
        ValueError: model in training mode, unknown precision or path.
    """
    plan = plan if plan is not None else FastPlan()
    check_precision(precision)
    if model.training:
        raise ValueError("the fast engine needs the model in eval() mode")
    device = next(model.parameters()).device
    cells = list(job.cells())
    stream = data_stream(images, labels, preprocess, batch_size).on_device(device)
    cl = _channels_last(device, precision)

    def passes():
        """One pass over the data: (labels, model input) per batch, channels_last when asked."""
        for b in stream.batches(device):
            x = b.x
            yield b.y, (x.contiguous(memory_format=torch.channels_last) if cl and x.ndim == 4 else x)

    with torch.inference_mode():
        example = stream.head(device, 2)
        if example is None:
            return [Counts() for _ in cells]
        if cl and example.ndim == 4:
            example = example.contiguous(memory_format=torch.channels_last)
        activation = job.perturbation.changes == OUTPUT
        split, why = find_split(model, job.layer, example, path=path, own_output=activation)
        if split is None:
            plan.fallback, plan.path = why, "functional"
            log.warning("%s: fast engine not applicable (%s); using the functional engine", _desc(job), why)
            return run_functional(job, model, stream, precision=precision, progress=progress, skip=skip,
                                  on_cells=on_cells)  # fmt: skip
        plan.path = split.how
        log.info("%s: %s%s", _desc(job), _PATH_TEXT[split.how], f" ({why})" if why else "")

    n = stream.n
    rows = stream.batch_size if n is None else max(1, min(stream.batch_size, n))
    if job.perturbation.changes == OUTPUT:
        from netperturb.perturb.engine.activations import run_fast_activation

        return run_fast_activation(
            job, split, model, stream, passes, rows=rows, precision=precision, max_replicas=max_replicas,
            memory_fraction=memory_fraction, progress=progress, plan=plan, skip=skip, on_cells=on_cells,
        )  # fmt: skip
    plan.exact = device.type == "cpu" if exact is None else bool(exact)
    if job.perturbation.changes == ENTRIES and split.host is None:  # a host unit (attention) takes the replica path
        from netperturb.perturb.engine.sparse import run_sparse

        return run_sparse(
            job, split, model, stream, passes, rows=rows, precision=precision, max_replicas=max_replicas,
            memory_fraction=memory_fraction, progress=progress, plan=plan, skip=skip, on_cells=on_cells,
            draw_workers=draw_workers, clean=lambda: _clean_counts(model, stream, precision),
        )  # fmt: skip
    builder = ReplicaBuilder(job.perturbation, split.clean_tensors())

    perturbed = [i for i, (level, _, _) in enumerate(cells) if level != 0]
    # Cells whose perturbed layer does not depend on the seed (a knockout at level 1, a
    # deterministic perturbation such as a filter) are computed once per level.
    first_at: dict[float, int] = {}
    same_as: dict[int, int] = {}
    for i in perturbed:
        if _deterministic(job.perturbation, cells[i][0]):
            same_as[i] = first_at.setdefault(cells[i][0], i)
    same_as = {i: j for i, j in same_as.items() if i != j}
    perturbed = [i for i in perturbed if i not in same_as]
    plan.deduplicated = len(same_as)
    budget = int(memory_fraction * available_memory(device))
    # the prefix outputs of every batch are cached when they fit (a stream of unknown length: never)
    plan.cached_prefix = n is not None and n * split.live_bytes <= budget // 2
    if plan.cached_prefix:
        budget -= n * split.live_bytes
    k = choose_replicas(split, rows, max(len(perturbed), 1), budget=budget, max_replicas=max_replicas)
    if max_replicas is None:  # the cost model's K (an explicit max_replicas is used as given, memory permitting)
        k = min(k, cost_replicas(split, device, rows, max(len(perturbed), 1)))
    plan.replicas = k
    plan.exact = device.type == "cpu" if exact is None else bool(exact)
    if draw_workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if device.type == "cpu":
            draw_workers = torch.get_num_threads()
        else:
            draw_workers = 0 if job.perturbation.device_draws else min(8, cores)
    plan.draw_workers = draw_workers
    log.info(
        "%s: fast engine, %d replicas per group, %s, prefix %s, %s batches of %d, %s",
        _desc(job), k, "suffix per replica (exact)" if plan.exact else "one suffix call per group",
        "cached" if plan.cached_prefix else "recomputed per group", n_batches(stream) or "?", stream.batch_size, precision,
    )  # fmt: skip

    results: list[Counts | None] = [None] * len(cells)
    zero = [i for i, (level, _, _) in enumerate(cells) if level == 0 and i not in skip]
    if zero:
        clean = _clean_counts(model, stream, precision)
        for i in zero:
            results[i] = clean
        if on_cells is not None:
            on_cells(zero, [clean] * len(zero))
    groups = [perturbed[i : i + k] for i in range(0, len(perturbed), k)]
    copies = {gi: [j for j, src in same_as.items() if src in g] for gi, g in enumerate(groups)}
    todo = [gi for gi, g in enumerate(groups) if any(i not in skip for i in g + copies[gi])]
    groups, copies = [groups[gi] for gi in todo], [copies[gi] for gi in todo]
    autocast = precision_context(device, precision)
    no_autocast = torch.autocast(device_type=device.type, enabled=False) if precision != "fp32" else nullcontext()
    pool = cf.ThreadPoolExecutor(draw_workers) if draw_workers > 0 else None

    def submit(group):
        if pool is None:
            return None
        return [pool.submit(builder.draw, cells[i][0], cells[i][2]) for i in group]

    # Node knockout leaves the other units' outputs as they are, and a knocked-out unit's
    # output is exactly 0 (its weights and bias are zero; with a BN-aware knockout its BN
    # affine terms too): run the layer once on the clean weights and zero each replica's
    # knocked-out channels, instead of running K perturbed copies of the layer.
    reuse_clean_unit = (
        job.perturbation.changes == ROWS
        and job.perturbation.zeroes_units(builder.params)
        and split.channel_dim is not None
        and (split.bn is None or split.bn.running_mean is not None)
    )
    plan.reuse_clean_unit = reuse_clean_unit
    if reuse_clean_unit:
        clean_wide = {role: t.clone() for role, t in builder.build([{}], split.groups).items()}
        clean_wide.update(_bn_stats(split, 1))
        if cl and clean_wide["weight"].ndim == 4:
            clean_wide["weight"] = clean_wide["weight"].contiguous(memory_format=torch.channels_last)
        channel_dim = split.channel_dim

    bar = tqdm(total=len(cells), desc=_desc(job), disable=not progress, mininterval=5)
    bar.update(len(cells) - sum(len(g) + len(c) for g, c in zip(groups, copies)))
    try:
        with torch.inference_mode():
            cache = None
            if plan.cached_prefix and groups:
                with autocast:
                    cache = [(split.prefix(x), y) for y, x in passes()]

            def live_batches():
                """(live values below the layer, labels) per batch: cached, or the prefix recomputed."""
                if cache is not None:
                    yield from cache
                    return
                for y, x in passes():
                    with autocast:
                        live = split.prefix(x)
                    yield live, y

            # the clean network's predictions per batch, once (the SDC metrics compare with them)
            reference, of = _reference(split, live_batches(), autocast, no_autocast, precision, cl) if groups else ([], [])
            pending = submit(groups[0]) if groups else None
            for gi, group in enumerate(groups):
                t0 = time.perf_counter()
                if pool is not None:
                    draws = [f.result() for f in pending]
                    pending = submit(groups[gi + 1]) if gi + 1 < len(groups) else None
                else:
                    draws = [builder.draw(cells[i][0], cells[i][2]) for i in group]
                kk = len(group)
                if reuse_clean_unit:
                    knocked = [d["weight"][1].to(device) if "weight" in d else None for d in draws]
                else:
                    wide = builder.build(draws, split.groups)
                    wide.update(_bn_stats(split, kk))
                    if cl and wide["weight"].ndim == 4:
                        wide["weight"] = wide["weight"].contiguous(memory_format=torch.channels_last)
                del draws
                plan.draw_seconds += time.perf_counter() - t0
                parts: list[list] = [[] for _ in group]
                for bi, (live, y) in enumerate(live_batches()):
                    with no_autocast:
                        x = live[split.unit_input]
                        x = x.float() if precision != "fp32" else x
                        if reuse_clean_unit:
                            u1 = split.unit(x, clean_wide, 1)
                            u = u1.repeat(kk, *([1] * (u1.ndim - 1)))
                            b = u1.shape[0]
                            for r, idx in enumerate(knocked):
                                if idx is not None and idx.numel():
                                    u[r * b : (r + 1) * b].index_fill_(channel_dim, idx, 0)
                            del u1
                        else:
                            u = split.unit(x, wide, kk)
                    if cl and u.ndim == 4:
                        u = u.contiguous(memory_format=torch.channels_last)
                    with autocast:
                        logits = split.run_suffix(u, live, kk, exact=plan.exact)
                    for r, c in enumerate(_replica_counts(logits, y, kk, reference[bi])):
                        parts[r].append((int(y.shape[0]), *c))
                    del u, logits, live
                for r, i in enumerate(group):
                    results[i] = _to_counts(parts[r], of)
                for j in copies[gi]:
                    results[j] = results[same_as[j]]
                if on_cells is not None:
                    on_cells(group + copies[gi], [results[i] for i in group + copies[gi]])
                bar.update(kk + len(copies[gi]))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return results


def _reference(split, live_batches, autocast, no_autocast, precision, cl):
    """Per batch of ``live_batches`` ((live values, labels) pairs), the clean network's
    :func:`~netperturb.core.evaluate.reference_masks` through the clean unit and the suffix,
    in ``precision``; and per batch the SDC denominators (images right in top-1, true class
    in the top 5)."""
    wide = widen_roles([split.clean_tensors()], split)
    if cl and wide["weight"].ndim == 4:
        wide["weight"] = wide["weight"].contiguous(memory_format=torch.channels_last)
    out = []
    for live, y in live_batches:
        with no_autocast:
            x = live[split.unit_input]
            u = split.unit(x.float() if precision != "fp32" else x, wide, 1)
        if cl and u.ndim == 4:
            u = u.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = split.run_suffix(u, live, 1, exact=False)  # reads copies of the (cached) live values
        out.append(reference_masks(logits, y))
    return out, [(int(a.sum()), int(b.sum())) for a, b in out]


def _deterministic(perturbation: Perturbation, level: float) -> bool:
    """True when the perturbed tensors at ``level`` do not depend on the cell's generator
    (:meth:`Perturbation.seed_independent`: e.g. the synaptic filters, a knockout at level 1)."""
    return perturbation.seed_independent(level)


def run_cells(
    job,
    loaded,
    images,
    labels: Tensor | None = None,
    *,
    engine: str = "fast",
    batch_size: int = 256,
    precision: str = "fp32",
    max_replicas: int | None = None,
    progress: bool = True,
    skip: Collection[int] = (),
    on_cells: OnCells | None = None,
    plan: FastPlan | None = None,
) -> list[Counts | None]:
    """Counts of every cell of ``job`` (a :class:`netperturb.perturb.grid.LayerJob`) for
    ``loaded`` (a :class:`netperturb.models.loaded.LoadedModel`) with ``engine``, on uint8
    ``images`` (N, C, H, W) and ``labels`` (N,) (preprocessed by ``loaded.preprocess``), or
    with ``labels=None`` on any data :func:`data_stream` takes.

    ``skip`` (cell indices not to compute, None in the result) and ``on_cells`` (called as
    cells finish) serve cell-level resume (:func:`netperturb.perturb.grid.run_layer_job`);
    ``plan`` receives the fast engine's decisions.

    Raises:
        ValueError: unknown engine or precision; the naive engine with a precision other
            than fp32.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r} unknown; known: {', '.join(ENGINES)}")
    check_precision(precision)
    model = loaded.model
    stream = data_stream(images, labels, loaded.preprocess, batch_size)
    if engine == "fast":
        return run_fast(job, model, stream, precision=precision, max_replicas=max_replicas, progress=progress,
                        plan=plan, skip=skip, on_cells=on_cells)  # fmt: skip
    if engine == "functional":
        return run_functional(job, model, stream, precision=precision, progress=progress, skip=skip,
                              on_cells=on_cells)  # fmt: skip
    if precision != "fp32":
        raise ValueError("the naive engine is the fp32 reference; precision must be fp32")
    with precision_context(next(model.parameters()).device, "fp32"):
        return run_naive(job, model, stream, progress=progress, skip=skip, on_cells=on_cells)
