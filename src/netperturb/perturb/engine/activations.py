"""Activation faults in the engines (:mod:`netperturb.perturb.faults.activations`).

Fast path: the weights do not change, so the clean prefix *and* the clean output of the
layer (the unit: the layer and its BatchNorm) are computed once per batch; each cell applies
its fault to that output and K cells share one suffix call on a K-fold batch. The reference
paths run the whole network with a forward hook on the layer's output module.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Collection, Iterator, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from netperturb.core.evaluate import Counts, count_logits, reference_masks
from netperturb.core.stream import ImageStream
from netperturb.perturb.engine.costs import cost_replicas
from netperturb.perturb.engine.graph import LayerSplit, widen_roles
from netperturb.perturb.engine.precision import _channels_last, precision_context
from netperturb.perturb.engine.replicas import _replica_counts, _to_counts, available_memory, choose_replicas

__all__ = ["run_fast_activation", "run_hooked"]

OnCells = Callable[[Sequence[int], Sequence[Counts]], None]


def _desc(job) -> str:
    return f"{job.model}:{job.layer.label}:{job.perturbation.name}"


def _clean(model, stream: ImageStream, precision) -> Counts:
    device = next(model.parameters()).device
    total = Counts()
    with torch.inference_mode(), precision_context(device, precision):
        for b in stream.batches(device):
            logits = model(b.x)
            total += count_logits(logits, b.y, logits)
    return total


def run_hooked(
    job, model: nn.Module, stream: ImageStream, *, precision: str = "fp32", progress: bool = True,
    skip: Collection[int] = (), on_cells: OnCells | None = None,
) -> list[Counts | None]:  # fmt: skip
    """Per cell, the whole network with the fault applied by a forward hook on the layer's
    output module (its BatchNorm when one follows it); the model is not modified (the hook
    is removed). The SDC reference is the same network without the hook, per batch; each
    image's index (transient faults) is its position in ``stream``
    (:mod:`netperturb.core.stream`, read once per cell). ``skip``: indices of cells not to
    compute (None in the result); ``on_cells`` is called after each cell.

    Returns:
        One :class:`Counts` per cell of ``job.cells()``, in that order.
    """
    device = next(model.parameters()).device
    from netperturb.perturb.engine.hooks import check_output_hook, output_module

    module = output_module(model, job.layer)
    fault = job.perturbation
    out: list[Counts | None] = []
    clean: Counts | None = None
    for ci, (level, _repeat, seed) in enumerate(tqdm(list(job.cells()), desc=_desc(job), disable=not progress, mininterval=5)):
        if ci in skip:
            out.append(None)
            continue
        if level == 0:
            clean = clean or _clean(model, stream, precision)
            out.append(clean)
            if on_cells is not None:
                on_cells([ci], [clean])
            continue
        total = Counts()
        with torch.inference_mode(), precision_context(device, precision):
            for b in stream.batches(device):
                x, y = b.x, b.y
                reference = model(x)
                index = torch.arange(b.start, b.start + y.shape[0])
                fired = []
                hook = module.register_forward_hook(
                    lambda _m, _i, o, level=level, seed=seed, index=index: fired.append(1) or fault.apply_activation(o, level, seed, index)
                )
                try:
                    logits = model(x)
                finally:
                    hook.remove()
                check_output_hook(job.layer, len(fired))
                total += count_logits(logits, y, reference)
        out.append(total)
        if on_cells is not None:
            on_cells([ci], [total])
    return out


def run_fast_activation(
    job, split: LayerSplit, model: nn.Module, stream: ImageStream, passes: Callable[[], Iterator[tuple[Tensor, Tensor]]],
    *, rows: int, precision: str, max_replicas: int | None, memory_fraction: float, progress: bool, plan,
    skip: Collection[int] = (), on_cells: OnCells | None = None,
) -> list[Counts | None]:  # fmt: skip
    """The fast engine for an activation fault (module docstring). ``passes()`` is one pass
    over ``stream``: (labels, model input on the device) per batch; ``rows`` the images per
    batch; ``split`` is the graph cut at ``job.layer``. Each image's index (transient faults)
    is its position in the stream. ``skip``: indices of cells not to compute (None in the
    result); ``on_cells`` is called after each group of cells.

    Returns:
        One :class:`Counts` per cell of ``job.cells()``, in that order.
    """
    device = next(model.parameters()).device
    cells = list(job.cells())
    n = stream.n
    fault = job.perturbation
    cl = _channels_last(device, precision)
    perturbed = [i for i, (level, _, _) in enumerate(cells) if level != 0 and i not in skip]
    zero = [i for i, (level, _, _) in enumerate(cells) if level == 0 and i not in skip]
    budget = int(memory_fraction * available_memory(device))
    cache_bytes = None if n is None else n * (split.live_bytes + split.unit_out_bytes)
    plan.cached_prefix = cache_bytes is not None and cache_bytes <= budget // 2
    if plan.cached_prefix:
        budget -= cache_bytes
    k = choose_replicas(split, rows, max(len(perturbed), 1), budget=budget, max_replicas=max_replicas)
    if max_replicas is None:  # the cost model's K (netperturb.perturb.engine.costs)
        k = min(k, cost_replicas(split, device, rows, max(len(perturbed), 1)))
    plan.replicas = k
    results: list[Counts | None] = [None] * len(cells)
    if zero:
        clean = _clean(model, stream, precision)
        for i in zero:
            results[i] = clean
        if on_cells is not None:
            on_cells(zero, [clean] * len(zero))
    groups = [perturbed[i : i + k] for i in range(0, len(perturbed), k)]
    autocast = precision_context(device, precision)
    no_autocast = torch.autocast(device_type=device.type, enabled=False) if precision != "fp32" else nullcontext()
    wide = widen_roles([split.clean_tensors()], split)

    def clean_batches():
        """Per batch: (live values the suffix reads, clean unit output, reference masks, labels, index)."""
        start = 0
        for y, x in passes():
            with autocast:
                live = split.prefix(x)
            with no_autocast:
                xu = live[split.unit_input]
                u = split.unit(xu.float() if precision != "fp32" else xu, wide, 1)
            rest = [live[i] for i in split.suffix_live]
            with autocast:
                # clones: the suffix may work in place (ReLU(inplace=True)) and u, rest are cached
                uc = u.clone(memory_format=torch.channels_last if cl and u.ndim == 4 else torch.contiguous_format)
                logits = split.suffix(uc, *[v.clone() for v in rest])
            index = torch.arange(start, start + y.shape[0])
            start += int(y.shape[0])
            yield rest, u, reference_masks(logits, y), y, index

    bar = tqdm(total=len(cells), desc=_desc(job), disable=not progress, mininterval=5)
    bar.update(len(cells) - len(perturbed))
    try:
        with torch.inference_mode():
            cache = list(clean_batches()) if plan.cached_prefix and groups else None
            of: list[tuple[int, int]] | None = None
            if cache is not None:
                of = [(int(a.sum()), int(b.sum())) for _, _, (a, b), _, _ in cache]
            for group in groups:
                kk = len(group)
                parts: list[list] = [[] for _ in group]
                batch_of = []
                for rest, u, ref, y, index in cache if cache is not None else clean_batches():
                    batch_of.append((int(ref[0].sum()), int(ref[1].sum())))
                    faulty = torch.cat([fault.apply_activation(u, cells[i][0], cells[i][2], index) for i in group])
                    if cl and faulty.ndim == 4:
                        faulty = faulty.contiguous(memory_format=torch.channels_last)
                    reps = [v.repeat(kk, *([1] * (v.ndim - 1))) for v in rest]
                    with autocast:
                        logits = split.suffix(faulty, *reps)
                    for r, c in enumerate(_replica_counts(logits, y, kk, ref)):
                        parts[r].append((int(y.shape[0]), *c))
                    del faulty, reps, logits
                for r, i in enumerate(group):
                    results[i] = _to_counts(parts[r], of or batch_of)
                if on_cells is not None:
                    on_cells(group, [results[i] for i in group])
                bar.update(kk)
    finally:
        bar.close()
    return results  # type: ignore[return-value]
