"""Sparse faults evaluated as sparse: a cell that changes k entries of a layer costs the suffix above the layer plus O(k).

For a perturbation whose cells change a set of entries of the layer's stored tensors
(``changes == "entries"``: bit flips, stuck-at bits, synapse knockout), the fast engine does
not build K dense copies of the layer. Per batch of images it computes the clean prefix
below the layer and the layer's clean output once (both cached when they fit in memory);
then each cell's faulty layer output is produced one of three ways, chosen per cell by the
cost model (:func:`netperturb.perturb.engine.costs.cell_path`) from k and the layer's shape:

- ``delta``: the clean output plus the sparse correction ``x * (w' - w)`` of the k changed
  weights (for a dense layer a few input columns, for a convolution single kernel taps of
  the padded input, accumulated into the output channels they feed), followed by the layer's
  BatchNorm on the changed channels only;
- ``inplace``: the k new values written into a job-level copy of the layer's tensors, the
  layer run on it, the k old values written back (no copy per cell);
- ``dense``: that copy rewritten whole from a mask (``torch.where``; a large synapse
  knockout) and restored, when k is a large share of the layer. A change that lists its
  entries (bit flips, stuck-at bits) never needs it: writing and undoing k listed entries
  costs the same as ``inplace`` whatever k is.

K cells' outputs then share one call of the suffix on a K-fold batch, K chosen by the cost
model (:func:`netperturb.perturb.engine.costs.suffix_replicas`). A cell whose new values are
not finite (an exponent flipped to all ones) never takes ``delta``: a convolution skips the
padding taps that the correction would multiply (0 x Inf), so only the layer itself gives
the naive loop's result there; nor does a cell that writes zeros (a knockout): the layer gives
an exact zero where a correction would leave a rounding residue, and exact ties between logits
decide top-k credits. Every path gives the naive loop's counts (tests compare them
cell for cell); ``inplace`` and ``dense`` run the very layer call the naive loop runs, and
``delta`` differs from it by float rounding of the output (the sum taken in another order).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import time
from collections import Counter
from contextlib import nullcontext
from typing import Callable, Collection, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from netperturb.core.evaluate import Counts, count_logits, reference_masks
from netperturb.core.seeds import cell_generator
from netperturb.core.stream import ImageStream, n_batches
from netperturb.perturb.base import Change, changed_entries
from netperturb.perturb.engine.costs import cell_path, cost_model, suffix_profile, suffix_replicas, unit_seconds
from netperturb.perturb.engine.graph import LayerSplit, widen_roles
from netperturb.perturb.engine.precision import _channels_last, precision_context
from netperturb.perturb.engine.replicas import _replica_counts, _to_counts, available_memory

log = logging.getLogger("netperturb")

__all__ = ["run_sparse", "SparseCell", "prepare_cell", "delta_supported"]

OnCells = Callable[[Sequence[int], Sequence[Counts]], None]

#: elements of the temporary (B, chunk, H, W) gather of a convolution's correction
_GATHER_ELEMENTS = 1 << 22


def _desc(job) -> str:
    return f"{job.model}:{job.layer.label}:{job.perturbation.name}"


def delta_supported(split: LayerSplit) -> bool:
    """True when the sparse correction is implemented for the layer: a Linear, or a Conv2d
    with zero padding given as numbers (or ``"valid"``), float32 weights."""
    m = split.module
    if m.weight.dtype != torch.float32:
        return False
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, nn.Conv2d):
        return m.padding_mode == "zeros" and (not isinstance(m.padding, str) or m.padding == "valid")
    return False


class SparseCell:
    """One cell's change, ready for its path.

    Attributes:
        path: ``"clean"`` (the draw changes nothing), ``"delta"``, ``"inplace"`` or ``"dense"``.
        entries: role -> (flat indices int64 (k,), new values (k,)) (``delta``, ``inplace``).
        changes: role -> :class:`~netperturb.perturb.base.Change` (``dense``).
        k: entries changed, over all roles.
        aff, pos, parts: ``delta`` only: the output channels touched (increasing), and per
            role the position of each entry's channel in ``aff`` and the correction's terms.
    """

    __slots__ = ("path", "entries", "changes", "k", "aff", "terms")

    def __init__(self, path: str, entries=None, changes=None, k: int = 0, aff=None, terms=None):
        self.path, self.entries, self.changes, self.k, self.aff, self.terms = path, entries, changes, k, aff, terms


def prepare_cell(
    draw: Mapping[str, Change], clean: Mapping[str, Tensor], split: LayerSplit, choose: Callable[..., str],
    delta_ok: bool,
) -> SparseCell:  # fmt: skip
    """Turn one cell's draw into a :class:`SparseCell` on the path ``choose(k=..., from_mask=...,
    delta_ok=..., channels=...)`` returns (the cost model's choice)."""
    if not draw:
        return SparseCell("clean")
    if any(c.op in ("set", "add") for c in draw.values()):  # dense changes: no list of entries
        return SparseCell("dense", changes=dict(draw), k=sum(clean[r].numel() for r in draw))
    from_mask = any(c.op in ("mask", "rows") for c in draw.values())
    roles_ok = delta_ok and set(draw) <= {"weight", "bias"} and not from_mask  # masks and rows write zeros
    if from_mask:  # count first: a large knockout goes dense without listing its entries
        k = sum(_count(clean[r], c) for r, c in draw.items())
        if k == 0:
            return SparseCell("clean")
        if choose(k=k, from_mask=True, delta_ok=roles_ok, channels=0) == "dense":
            return SparseCell("dense", changes=dict(draw), k=k)
    entries = {role: changed_entries(clean[role], c) for role, c in draw.items()}
    k = sum(int(i.numel()) for i, _ in entries.values())
    if k == 0:
        return SparseCell("clean")
    # the correction only for finite, non-zero new values: an Inf / NaN meets the padding a
    # convolution skips, and a zero (a knockout) must stay an exact zero (exact ties)
    ok = roles_ok and all(bool((torch.isfinite(v) & (v != 0)).all()) for _, v in entries.values())
    path = choose(k=k, from_mask=from_mask, delta_ok=ok, channels=0)
    if path == "dense":
        return SparseCell("dense", changes=dict(draw), k=k)
    if path == "delta":
        aff, terms = _delta_terms(entries, clean, split)
        return SparseCell("delta", k=k, aff=aff, terms=terms)
    return SparseCell("inplace", entries=entries, k=k)


def _count(t: Tensor, change: Change) -> int:
    """Entries of ``t`` a mask / rows / entries change sets."""
    if change.op == "mask":
        return int(change.data.sum())
    if change.op == "rows":
        return int(change.data.numel()) * (t[0].numel() if t.ndim else 1)
    return int(change.data.numel())


def _delta_terms(entries, clean, split: LayerSplit):
    """The correction's terms: (output channels touched, per role a tuple of index tensors and
    the weight changes ``new - old`` (float32))."""
    m = split.module
    w = clean["weight"]
    out_ch = int(w.shape[0])
    chans, terms = [], {}
    if "weight" in entries:
        idx, vals = entries["weight"]
        per = w[0].numel()
        o = torch.div(idx, per, rounding_mode="floor")
        rest = idx - o * per
        d = vals.float() - w.reshape(-1)[idx].float()
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            cin_g = int(w.shape[1])
            c = torch.div(rest, kh * kw, rounding_mode="floor")
            tap = rest - c * (kh * kw)
            r = torch.div(tap, kw, rounding_mode="floor")
            s = tap - r * kw
            group = torch.div(o, out_ch // m.groups, rounding_mode="floor")
            terms["weight"] = (o, group * cin_g + c, r, s, d)
        else:
            terms["weight"] = (o, rest, d)
        chans.append(o)
    if "bias" in entries:
        idx, vals = entries["bias"]
        terms["bias"] = (idx, vals.float() - clean["bias"].reshape(-1)[idx].float())
        chans.append(idx)
    aff = torch.unique(torch.cat(chans))
    for role, t in terms.items():
        terms[role] = (torch.searchsorted(aff, t[0]), *t[1:])
    return aff, terms


def _pad(split: LayerSplit, x: Tensor) -> Tensor:
    m = split.module
    if isinstance(m, nn.Conv2d) and not isinstance(m.padding, str):
        ph, pw = m.padding
        if ph or pw:
            return F.pad(x, (pw, pw, ph, ph))
    return x


def _delta_output(split: LayerSplit, cell: SparseCell, xp: Tensor, y_clean: Tensor, u_clean: Tensor, slot: Tensor,
                  bn: Mapping[str, Tensor]) -> None:  # fmt: skip
    """Write the cell's faulty unit output into ``slot`` (B, ...): the clean output with the
    touched channels recomputed as clean pre-BN output + correction, then BN on them."""
    m = split.module
    conv = isinstance(m, nn.Conv2d)
    dim = 1 if conv else y_clean.ndim - 1
    z = y_clean.index_select(dim, cell.aff)
    b = xp.shape[0]
    if "weight" in cell.terms:
        if conv:
            pos, ch, r, s, d = cell.terms["weight"]
            ho, wo = z.shape[-2:]
            (sh, sw), (dh, dw) = m.stride, m.dilation
            hi = (r * dh).unsqueeze(1) + sh * torch.arange(ho, device=xp.device)
            wi = (s * dw).unsqueeze(1) + sw * torch.arange(wo, device=xp.device)
            step = max(1, _GATHER_ELEMENTS // max(1, b * ho * wo))
            for a in range(0, pos.numel(), step):
                e = slice(a, a + step)
                patch = xp[:, ch[e, None, None], hi[e, :, None], wi[e, None, :]]  # (B, k, Ho, Wo)
                z.index_add_(1, pos[e], patch * d[e].view(1, -1, 1, 1))
        else:
            pos, col, d = cell.terms["weight"]
            z.index_add_(dim, pos, xp[..., col] * d)
    if "bias" in cell.terms:
        pos, d = cell.terms["bias"]
        shape = [1] * z.ndim
        shape[dim] = -1
        z.index_add_(dim, pos, d.view(shape).expand(*z.shape[:dim], -1, *z.shape[dim + 1 :]).contiguous())
    if split.bn is not None:
        bnm = split.bn
        use_batch_stats = bnm.training or (bnm.running_mean is None and bnm.running_var is None)
        pick = (lambda t: None if t is None else t.index_select(0, cell.aff))  # noqa: E731
        z = F.batch_norm(z, pick(bn.get("bn_mean")), pick(bn.get("bn_var")), pick(bn.get("bn_weight")),
                         pick(bn.get("bn_bias")), use_batch_stats, 0.0, bnm.eps)  # fmt: skip
    slot.copy_(u_clean)
    slot.index_copy_(dim, cell.aff, z.to(slot.dtype))


def _layer_only(split: LayerSplit, x: Tensor, tensors: Mapping[str, Tensor]) -> Tensor:
    """The perturbed layer without its BatchNorm (the pre-BN output the correction adds to)."""
    m = split.module
    if isinstance(m, nn.modules.conv._ConvNd):  # Conv1d / 2d / 3d
        return m._conv_forward(x, tensors["weight"], tensors.get("bias"))
    return F.linear(x, tensors["weight"], tensors.get("bias"))


def run_sparse(
    job, split: LayerSplit, model: nn.Module, stream: ImageStream, passes: Callable[[], Iterator[tuple[Tensor, Tensor]]],
    *, rows: int, precision: str, max_replicas: int | None, memory_fraction: float, progress: bool, plan,
    skip: Collection[int] = (), on_cells: OnCells | None = None, clean: Callable[[], Counts],
    draw_workers: int | None = None,
) -> list[Counts | None]:  # fmt: skip
    """The fast engine for a perturbation that changes entries (module docstring).

    Args:
        job: a :class:`netperturb.perturb.grid.LayerJob` whose perturbation has
            ``changes == "entries"``.
        split: the graph cut at ``job.layer``.
        stream: the images (:class:`~netperturb.core.stream.ImageStream`); ``passes()`` is one
            pass over it: (labels, model input on the device) per batch; ``rows``: images per
            batch.
        clean: the clean network's counts (level-0 cells, and cells whose draw changes nothing).
        draw_workers: threads drawing the next group's cells while this group computes (None:
            the torch threads on a CPU when draws do not run on the device).
        max_replicas: K, memory permitting (None: the cost model's K,
            :func:`netperturb.perturb.engine.costs.suffix_replicas`).
        skip, on_cells, plan, memory_fraction: as for
            :func:`netperturb.perturb.engine.runners.run_fast`; ``plan.paths`` counts the cells
            per path, ``plan.replicas`` is K.

    Returns:
        One :class:`Counts` per cell of ``job.cells()``, in that order.

    Raises:
        ValueError: what the perturbation's ``prepare`` raises (e.g. weights not stored in a
            bit fault's format), before any cell is computed.
    """
    p = job.perturbation
    device = next(model.parameters()).device
    cells = list(job.cells())
    n = stream.n
    params = split.clean_tensors()
    context = p.prepare(params)
    cl = _channels_last(device, precision)
    nb = n_batches(stream) or 1  # batches per pass (unknown length: the cost model assumes one)
    perturbed = [i for i, (level, _, _) in enumerate(cells) if level != 0]
    first_at: dict[float, int] = {}
    same_as = {}
    for i in perturbed:
        if p.seed_independent(cells[i][0]):
            same_as[i] = first_at.setdefault(cells[i][0], i)
    same_as = {i: j for i, j in same_as.items() if i != j}
    perturbed = [i for i in perturbed if i not in same_as]
    plan.deduplicated = len(same_as)

    cm = cost_model(device)
    prof = suffix_profile(split, int(split.probe_logits.shape[0]) if split.probe_logits is not None else 2)
    conv = isinstance(split.module, nn.Conv2d)
    n_params = sum(int(t.numel()) for t in params.values())
    b0 = rows
    budget = int(memory_fraction * available_memory(device))
    cache_bytes = None if n is None else n * (split.live_bytes + 2 * split.unit_out_bytes)
    plan.cached_prefix = cache_bytes is not None and cache_bytes <= budget // 2
    if plan.cached_prefix:
        budget -= cache_bytes
    per_replica_bytes = b0 * (2 * split.unit_out_bytes + split.suffix_peak_bytes)
    if max_replicas is None:  # the cost model's K, within the memory
        k = suffix_replicas(cm, prof, batch=b0, per_replica_seconds=unit_seconds(cm, prof, conv, n_params, b0),
                            per_replica_bytes=per_replica_bytes, budget=budget, n_cells=max(len(perturbed), 1))  # fmt: skip
    else:  # as many as asked for, memory permitting
        k = max(1, min(int(max_replicas), max(len(perturbed), 1), int(budget // max(per_replica_bytes, 1))))
    plan.replicas = k
    delta_ok = delta_supported(split)

    def choose(**kw) -> str:
        return cell_path(cm, prof, n_params=n_params, batch=b0, n_batches=nb, conv=conv, **kw)[0]

    if draw_workers is None:
        draw_workers = 0 if (p.device_draws and device.type != "cpu") else (torch.get_num_threads() if device.type == "cpu" else min(8, os.cpu_count() or 1))
    draw_workers = draw_workers if draw_workers > 1 else 0
    plan.draw_workers = draw_workers
    paths: Counter = Counter()
    plan.paths = paths

    def draw(i: int) -> SparseCell:
        level, _, seed = cells[i]
        d = p.draw(params, level, cell_generator(seed), context)
        return prepare_cell(d, params, split, choose, delta_ok)

    results: list[Counts | None] = [None] * len(cells)
    zero = [i for i, (level, _, _) in enumerate(cells) if level == 0 and i not in skip]
    groups = [perturbed[i : i + k] for i in range(0, len(perturbed), k)]
    copies = {gi: [j for j, src in same_as.items() if src in g] for gi, g in enumerate(groups)}
    todo = [gi for gi, g in enumerate(groups) if any(i not in skip for i in g + copies[gi])]
    groups, copies = [groups[gi] for gi in todo], [copies[gi] for gi in todo]
    log.info("%s: sparse engine, %d cells per suffix call, prefix %s, %s batches of %d, %s", _desc(job), k,
             "cached" if plan.cached_prefix else "recomputed per group", n_batches(stream) or "?", stream.batch_size,
             precision)  # fmt: skip

    autocast = precision_context(device, precision)
    no_autocast = torch.autocast(device_type=device.type, enabled=False) if precision != "fp32" else nullcontext()
    clean_wide = widen_roles([params], split)
    pool = cf.ThreadPoolExecutor(draw_workers) if draw_workers > 0 else None

    def submit(group):
        return None if pool is None else [pool.submit(draw, i) for i in group]

    clean_parts: list[Counts] = []
    first_pass = {"done": False}

    def clean_batches():
        """Per batch: (live values the suffix reads, the layer's input, its clean pre-BN output,
        the clean unit output, reference masks, labels)."""
        first = not first_pass["done"] and not clean_parts
        for labels, inputs in passes():
            with autocast:
                live = split.prefix(inputs)
            with no_autocast:
                x = live[split.unit_input]
                x = x.float() if precision != "fp32" else x
                u = split.unit(x, clean_wide, 1)
                y = _layer_only(split, x, clean_wide) if split.bn is not None else u
            with autocast:
                uc = u.clone(memory_format=torch.channels_last if cl and u.ndim == 4 else torch.contiguous_format)
                logits = split.run_suffix(uc, live, 1, exact=False)  # reads copies: the suffix may work in place
            if precision == "fp32" and first:
                # prefix + unit + suffix is the whole network bit for bit in fp32 (tests check it):
                # the clean network's counts come with the reference, no separate evaluation
                clean_parts.append(count_logits(logits, labels, logits))
            yield live, x, y, u, reference_masks(logits, labels), labels
        if first:
            first_pass["done"] = True

    clean_counts: Counts | None = None

    def clean_total() -> Counts:
        nonlocal clean_counts
        if clean_counts is None:
            if first_pass["done"] and precision == "fp32":
                clean_counts = Counts()
                for c in clean_parts:
                    clean_counts += c
            else:
                clean_counts = clean()
        return clean_counts

    bar = tqdm(total=len(cells), desc=_desc(job), disable=not progress, mininterval=5)
    bar.update(len(cells) - sum(len(g) + len(c) for g, c in zip(groups, copies)))
    try:
        with torch.inference_mode():
            # a job-level copy of the layer's tensors that in-place and dense cells write into
            # and restore, made by the first such cell (a job of delta cells never needs it)
            scratch: dict[str, Tensor] = {}
            work = dict(clean_wide)

            def scratch_copy() -> None:
                if not scratch:
                    scratch.update({role: t.detach().clone(memory_format=torch.contiguous_format)
                                    for role, t in params.items()})  # fmt: skip
                    work.update(scratch)

            cache = list(clean_batches()) if plan.cached_prefix and groups else None
            if zero:
                for i in zero:
                    results[i] = clean_total()
                if on_cells is not None:
                    on_cells(zero, [clean_total()] * len(zero))
            pending = submit(groups[0]) if groups else None
            for gi, group in enumerate(groups):
                t0 = time.perf_counter()
                if pool is not None:
                    prepared = [f.result() for f in pending]
                    pending = submit(groups[gi + 1]) if gi + 1 < len(groups) else None
                else:
                    prepared = [draw(i) for i in group]
                plan.draw_seconds += time.perf_counter() - t0
                paths.update(c.path for c in prepared)
                active = [r for r, c in enumerate(prepared) if c.path != "clean"]  # a draw with no change is the clean network
                kk = len(active)
                parts: list[list] = [[] for _ in active]
                batch_of = []
                for live, x, y, u, ref, labels in (cache if cache is not None else clean_batches()) if kk else ():
                    batch_of.append((int(ref[0].sum()), int(ref[1].sum())))
                    bsz = int(labels.shape[0])
                    out = torch.empty((kk * bsz, *u.shape[1:]), dtype=u.dtype, device=u.device)
                    xp = _pad(split, x) if any(prepared[r].path == "delta" for r in active) else None
                    with no_autocast:
                        for slot_i, r in enumerate(active):
                            cell = prepared[r]
                            slot = out[slot_i * bsz : (slot_i + 1) * bsz]
                            if cell.path == "delta":
                                _delta_output(split, cell, xp, y, u, slot, clean_wide)
                            else:  # inplace (the listed entries) or dense (the change itself)
                                scratch_copy()
                                changes = cell.changes if cell.path == "dense" else \
                                    {role: Change("entries", idx, vals) for role, (idx, vals) in cell.entries.items()}
                                try:
                                    for role, change in changes.items():
                                        _rewrite(scratch[role], params[role], change)
                                    slot.copy_(split.unit(x, work, 1))
                                finally:
                                    for role, change in changes.items():
                                        _restore(scratch[role], params[role], change)
                    if cl and out.ndim == 4:
                        out = out.contiguous(memory_format=torch.channels_last)
                    with autocast:
                        logits = split.run_suffix(out, live, kk, exact=plan.exact)
                    for slot_i, c in enumerate(_replica_counts(logits, labels, kk, ref)):
                        parts[slot_i].append((bsz, *c))
                    del out, logits
                for r, i in enumerate(group):
                    results[i] = clean_total() if prepared[r].path == "clean" else _to_counts(parts[active.index(r)], batch_of)
                for j in copies[gi]:
                    results[j] = results[same_as[j]]
                if on_cells is not None:
                    on_cells(group + copies[gi], [results[i] for i in group + copies[gi]])
                bar.update(len(group) + len(copies[gi]))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    log.info("%s: paths %s", _desc(job), ", ".join(f"{name} {count}" for name, count in sorted(paths.items())))
    return results


def _rewrite(buf: Tensor, clean: Tensor, change: Change) -> None:
    """``buf`` := ``clean`` with ``change`` applied, in place. ``buf`` is a contiguous copy of
    ``clean`` that already holds ``clean`` (the job's scratch copy, restored after every cell
    by :func:`_restore`), so a change of listed entries or rows writes only those: AlexNet fc6
    at a bit error rate of 1e-3 (1.2 M flips) no longer copies its 151 MB twice per cell."""
    op, data, values = change
    src = clean.detach()
    if op == "mask":
        torch.where(data.to(src.device).view(src.shape), src.new_zeros(()), src, out=buf)
    elif op == "add":
        torch.add(src, data.to(device=src.device, dtype=src.dtype), out=buf)
    elif op == "set":
        buf.copy_(data)
    elif op == "rows":
        buf.index_fill_(0, data.to(src.device), 0)
    else:  # entries
        buf.view(-1)[data.to(src.device)] = values.to(device=src.device, dtype=src.dtype)


def _restore(buf: Tensor, clean: Tensor, change: Change) -> None:
    """Undo :func:`_rewrite`: ``buf`` := ``clean`` again, writing only the rows or entries a
    ``rows`` / ``entries`` change wrote (the whole tensor for the other changes)."""
    op, data, _ = change
    src = clean.detach()
    if op == "rows":
        rows = data.to(src.device)
        buf.index_copy_(0, rows, src.index_select(0, rows))
    elif op == "entries":
        idx = data.to(src.device)
        buf.view(-1)[idx] = src.reshape(-1)[idx]
    else:
        buf.copy_(src)
