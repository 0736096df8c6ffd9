"""Batched replicas: K perturbed copies of a layer drawn into reused buffers, and how many fit in memory
(the Design page of the docs, "The engine" 3-4)."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from netperturb.core.evaluate import Counts, add_resilience, counts_from_parts, resilience_parts, topk_credit_parts
from netperturb.core.seeds import cell_generator
from netperturb.perturb.base import Change, Perturbation, apply_change
from netperturb.perturb.engine.graph import LayerSplit, widen

__all__ = ["ReplicaBuilder", "available_memory", "choose_replicas"]


# --------------------------------------------------------------------------------------
# Perturbed replicas
# --------------------------------------------------------------------------------------


class ReplicaBuilder:
    """Draws the perturbed tensors of cells and stacks them into the wide unit.

    The *draw* of a cell (:meth:`Perturbation.draw`: a :class:`~netperturb.perturb.base.Change`
    per role -- zero a mask, zero rows, add a delta, set entries, or replace the tensor) is
    separated from its *application* (into the wide buffer), and the job's constants (e.g. the
    layer's weight s.d. for Gaussian noise, :meth:`Perturbation.prepare`) are computed once per
    job. The builder never looks at the perturbation's class: the tensors equal
    ``perturbation(params, level, generator)`` bit for bit for any perturbation (tests check it).
    """

    def __init__(self, perturbation: Perturbation, params: Mapping[str, Tensor]):
        self.perturbation = perturbation
        self.params = dict(params)
        self.context = perturbation.prepare(self.params)
        self._buffers: dict[str, Tensor] = {}

    def draw(self, level: float, seed: int) -> dict[str, Change]:
        """role -> :class:`~netperturb.perturb.base.Change` (tensors on the parameters'
        device) for one cell, from the cell's generator. Thread-safe (reads the parameters
        only). Level 0 returns ``{}``."""
        return self.perturbation.draw(self.params, level, cell_generator(seed), self.context)

    def apply(self, draw: Mapping[str, Change]) -> dict[str, Tensor]:
        """role -> the cell's tensor on the parameters' device (clean where not drawn).

        Raises:
            ValueError: the draw changes a role the unit does not have.
        """
        unknown = set(draw) - set(self.params)
        if unknown:
            raise ValueError(f"{self.perturbation.name}: changes {sorted(unknown)}, not among {sorted(self.params)}")
        return {role: apply_change(clean, draw[role]) if role in draw else clean for role, clean in self.params.items()}

    def cell(self, level: float, seed: int) -> dict[str, Tensor]:
        """The tensors of the roles this cell changes (what the perturbation returns)."""
        d = self.draw(level, seed)
        full = self.apply(d)
        return {role: full[role] for role in d}

    def build(self, draws: Sequence[Mapping[str, Change]], groups: int = 1) -> dict[str, Tensor]:
        """role -> the K = len(draws) replicas' tensors widened as :func:`~netperturb.perturb.engine.units.widen` does.

        Each replica is written straight into a buffer kept for the job (no per-cell copies
        of the clean tensors, no concatenation); the values equal
        ``widen([apply(d)[role] for d in draws], groups)``. The returned tensors are
        overwritten by the next call.
        """
        k = len(draws)
        for d in draws:
            unknown = set(d) - set(self.params)
            if unknown:
                raise ValueError(f"{self.perturbation.name}: changes {sorted(unknown)}, not among {sorted(self.params)}")
        out = {}
        for role, clean in self.params.items():
            if groups != 1 or clean.ndim == 0:
                out[role] = widen([self.apply({role: d[role]} if role in d else {})[role] for d in draws], groups)
                continue
            src = clean.detach()
            rows = src.shape[0]
            buf = self._buffers.get(role)
            if buf is None or buf.shape[0] < k * rows:
                buf = self._buffers[role] = torch.empty((k * rows, *src.shape[1:]), dtype=src.dtype, device=src.device)
            wide = buf[: k * rows]
            for r, d in enumerate(draws):
                slot = wide[r * rows : (r + 1) * rows]
                op, t, values = d.get(role, (None, None, None))
                if op == "add":
                    torch.add(src, t.to(device=src.device, dtype=src.dtype), out=slot)
                    continue
                if op == "mask":
                    torch.where(t.to(src.device).view(src.shape), src.new_zeros(()), src, out=slot)
                    continue
                slot.copy_(t if op == "set" else src)
                if op == "rows":
                    slot.index_fill_(0, t.to(src.device), 0)
                elif op == "entries":
                    slot.view(-1)[t.to(src.device)] = values.to(device=src.device, dtype=src.dtype)
            out[role] = wide
        return out


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------


def available_memory(device: torch.device) -> int:
    """Free bytes: ``torch.cuda.mem_get_info`` on a GPU; on the CPU, MemAvailable of
    /proc/meminfo, capped by the cgroup (v2 or v1) limit minus usage; 4 GiB if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    for limit_f, usage_f in [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ]:
        try:
            limit = open(limit_f).read().strip()
            usage = int(open(usage_f).read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            free = int(limit) - usage
            avail = free if avail is None else min(avail, free)
        break
    return int(avail) if avail is not None else 4 << 30


def choose_replicas(
    split: LayerSplit,
    batch: int,
    n_cells: int,
    *,
    budget: int,
    max_replicas: int | None = None,
) -> int:
    """K: how many perturbed replicas fit in ``budget`` bytes at ``batch`` images.

    Per replica: the unit's output three times (wide, reordered, after BN), the repeated
    live values and the suffix's activation peak (per-image estimates from
    :func:`split_at_layer`, fp32), and four times the layer's tensors (its slot in the wide
    buffer, and the draws of the current and of the next group: noise as large as the
    weights, or int64 indices). Clamped to [1, min(max_replicas, n_cells)].
    """
    per_image = 3 * split.unit_out_bytes + split.suffix_peak_bytes  # includes the repeated live values
    params = sum(t.numel() * t.element_size() for t in split.clean_tensors().values())
    per_replica = batch * per_image + 4 * params
    k = int(budget // max(per_replica, 1))
    cap = n_cells if max_replicas is None else min(int(max_replicas), n_cells)
    return max(1, min(k, cap))


# --------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------


def _replica_counts(
    logits: Tensor, labels: Tensor, k: int, reference: tuple[Tensor, Tensor] | None = None
) -> list[tuple[Tensor, ...]]:
    """Per replica its per-image parts on the device (no host sync): top-1 (num, den), top-5
    (num, den), loss, and with ``reference`` (the clean network's
    :func:`~netperturb.core.evaluate.reference_masks` of the batch) the SDC numerators and the
    DUE flags (:func:`~netperturb.core.evaluate.resilience_parts`). These are
    :func:`netperturb.core.evaluate.count_logits`'s parts on that replica's (B, C) logits, so
    the exact sums agree with the other engines bit for bit."""
    logits = logits.float()
    b = labels.shape[0]
    rep = labels.repeat(k)
    n1, d1 = topk_credit_parts(logits, rep, 1)
    n5, d5 = topk_credit_parts(logits, rep, min(5, logits.shape[1]))
    if reference is not None:
        ok1, ok5 = (m.repeat(k) for m in reference)
        s1, s5, due = resilience_parts(logits, ok1, ok5, (n1, d1), (n5, d5))
    else:
        s1 = s5 = None
        due = ~torch.isfinite(logits).all(1)
    out = []
    for r in range(k):
        sl = slice(r * b, (r + 1) * b)
        loss = F.cross_entropy(logits[sl], labels, reduction="none")
        part = (n1[sl].clone(), d1[sl].clone(), n5[sl].clone(), d5[sl].clone(), loss, due[sl].clone())
        if s1 is not None:
            part += (s1[sl].clone(), s5[sl].clone())
        out.append(part)
    return out


def _to_counts(parts: Sequence[tuple], of: Sequence[tuple[int, int]] | None = None) -> Counts:
    """Exact :class:`Counts` of one replica's per-batch parts ``(n, *_replica_counts(...)[r])``;
    ``of``: per batch the SDC denominators (clean top-1 correct, true class in the clean top 5),
    used when the parts carry SDC numerators."""
    if not parts:
        return Counts()
    cat = [torch.cat([p[i] for p in parts]) for i in range(1, len(parts[0]))]
    c = counts_from_parts(*cat[:5])
    if len(cat) > 6 and of is not None:
        of1, of5 = (sum(o[j] for o in of) for j in (0, 1))
        return add_resilience(c, cat[6], cat[1], cat[7], cat[3], cat[5], of1, of5)
    c.due = int(cat[5].sum())
    return c
