"""The engine's cost model: which path a cell takes, and how many cells share one suffix call.

A cell of a job on layer L costs the suffix above L (the network no method can skip) plus
what it takes to produce L's faulty output. Three ways to produce that output:

``delta``
    the clean output of L (computed once per batch) plus a sparse correction: for each of
    the k changed weights, the change times the input it multiplies (a column of a dense
    layer's input, one strided tap of a convolution's padded input), added to the channel
    it feeds; then L's BatchNorm on the changed channels only. O(k x B x spatial) work.
``inplace``
    the k changed entries written into a job-level copy of L's tensors and undone after
    (``entries``: XOR / stuck-at keep the k old values), then L itself on the batch. O(k) to
    apply, plus L's cost.
``dense``
    the copy rewritten whole (``torch.where`` over a mask, O(n)) and restored, plus L's cost:
    cheaper than ``inplace`` when k is a large share of n (a synapse knockout at 50%), whose
    mask would otherwise be listed first. Only a mask is offered it: a change that lists
    its entries (bit flips) writes and undoes them in place on either path.

:func:`cell_path` picks the cheapest from k, the layer's shape and the constants of a
:class:`CostModel`; :func:`suffix_replicas` picks K, the cells evaluated by one suffix call
on a K-fold batch: the smallest K that spreads the suffix's fixed cost per call (its weights
read once per call, the kernel launches) to within :data:`FIXED_SHARE` of the cost per
replica, within the memory budget (a larger K only adds memory traffic: measured in
``bench/tables/cost_model-cpu.txt``).

The constants (:data:`CPU`) were measured with ``bench/cost_model.py`` on the project's
2-core x86-64 VM, one torch thread, under load (see that table for the command and the date);
:data:`CUDA` holds estimates from published H100 figures, not measurements. Only their ratios
matter for the choices; every path gives the same counts (tests compare each with the naive
loop), so a wrong constant costs time, never a different result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import fx, nn

from netperturb.perturb.engine.graph import LayerSplit

__all__ = ["CostModel", "CPU", "CUDA", "cost_model", "SuffixProfile", "suffix_profile", "cell_path", "suffix_replicas",
           "cost_replicas", "unit_seconds", "suffix_seconds", "FIXED_SHARE", "PATHS"]  # fmt: skip

#: The ways a cell's faulty layer output is produced (module docstring).
PATHS = ("delta", "inplace", "dense")
#: :func:`suffix_replicas` stops growing K once the suffix's fixed cost per replica is below
#: this share of the rest of a replica's cost.
FIXED_SHARE = 0.05


@dataclass(frozen=True)
class CostModel:
    """Seconds per unit of work on one device (fp32).

    Attributes:
        conv_mac: per multiply-accumulate of a convolution.
        linear_mac: per multiply-accumulate of a matrix product when compute-bound.
        weight_byte: per byte of weights a layer reads once per call, beyond its
            multiply-accumulates (what makes a dense layer at a small batch cost more per
            image than at a large one).
        act_byte: per byte of activations written by the suffix (elementwise layers, pooling).
        copy: per float32 element copied or rewritten (clone, ``torch.where``, ``copy_``).
        scatter: per entry written or read by index (``index_put_``, gather).
        gather: per multiply-add of a dense layer's sparse correction (gather an input
            column, multiply, ``index_add_``).
        gather_conv: the same for a convolution (strided taps of the padded input).
        call: per operator call (framework overhead).
    """

    conv_mac: float
    linear_mac: float
    weight_byte: float
    act_byte: float
    copy: float
    scatter: float
    gather: float
    gather_conv: float
    call: float


#: Measured by ``bench/cost_model.py`` in CPU seconds (one thread, the project's 2-core
#: x86-64 VM, 2026-12-07, under load; ``bench/tables/cost_model-cpu.txt``), rounded.
CPU = CostModel(conv_mac=2.9e-11, linear_mac=2.6e-11, weight_byte=1.7e-10, act_byte=1.8e-9, copy=4.3e-10,
                scatter=3.5e-8, gather=6.4e-9, gather_conv=1.4e-8, call=1.5e-6)  # fmt: skip
#: Not measured (no GPU was available): estimates for an H100 (fp32 ~50 TFLOP/s without
#: TF32, ~3 TB/s), small operations launch-bound.
CUDA = CostModel(conv_mac=4.0e-14, linear_mac=4.0e-14, weight_byte=3.5e-13, act_byte=3.5e-13, copy=1.5e-12,
                 scatter=5.0e-12, gather=5.0e-12, gather_conv=5.0e-12, call=1.0e-5)  # fmt: skip


def cost_model(device: torch.device) -> CostModel:
    """The constants for ``device``'s type (:data:`CUDA` for any accelerator, else :data:`CPU`)."""
    return CPU if torch.device(device).type == "cpu" else CUDA


# --------------------------------------------------------------------------------------
# What a job's layer and suffix cost
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuffixProfile:
    """Per-image work of a split network, from the shapes ``torch.fx`` recorded.

    Attributes:
        unit_macs: multiply-accumulates of the perturbed layer per image.
        unit_out: elements of the layer's output per image (one replica).
        spatial: output positions per output channel (H x W for a convolution, 1 for a dense
            layer): what one changed weight touches per image.
        suffix_conv_macs, suffix_linear_macs: multiply-accumulates of the convolutions and of
            the dense layers above the layer, per image.
        suffix_weight_bytes: bytes of the parameters the suffix reads (once per call).
        suffix_act_bytes: bytes of the suffix's intermediate values per image.
        suffix_nodes: operator calls of the suffix.
    """

    unit_macs: float
    unit_out: int
    spatial: int
    suffix_conv_macs: float
    suffix_linear_macs: float
    suffix_weight_bytes: int
    suffix_act_bytes: int
    suffix_nodes: int


def _numel(meta) -> int:
    shape = getattr(meta, "shape", None)
    return math.prod(shape) if shape is not None else 0


def _layer_macs(module: nn.Module, out_meta, batch: int) -> float:
    """Multiply-accumulates per image of a Conv / Linear module from its output shape."""
    out = _numel(out_meta) / max(batch, 1)
    if isinstance(module, nn.modules.conv._ConvNd):
        return out * module.in_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return out * module.in_features
    return 0.0


def suffix_profile(split: LayerSplit, batch: int) -> SuffixProfile:
    """The :class:`SuffixProfile` of ``split`` (``batch``: the example's batch size that the
    recorded shapes carry)."""
    conv = lin = 0.0
    wbytes = abytes = 0
    nodes = 0
    if isinstance(split.suffix, fx.GraphModule):  # graph split: every operator with its recorded shape
        gm = split.suffix
        ops = [
            (gm.get_submodule(node.target) if node.op == "call_module" else None, node.meta.get("tensor_meta"))
            for node in gm.graph.nodes if node.op not in ("placeholder", "output")
        ]  # fmt: skip
    else:  # hook path: the leaf module calls after the layer (functional operators are not seen)
        ops = [(mod, SimpleNamespace(shape=shape)) for mod, shape in getattr(split, "suffix_calls", [])]
    seen: set[int] = set()
    for mod, meta in ops:
        nodes += 1
        abytes += _numel(meta) * 4 // max(batch, 1)
        if mod is not None:
            for p in mod.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    wbytes += p.numel() * p.element_size()
            macs = _layer_macs(mod, meta, batch)
            if isinstance(mod, nn.Linear):
                lin += macs
            else:
                conv += macs
    m = split.module
    w = split.clean_tensors()["weight"]  # the module's own weight, or an attention's in_proj_weight
    unit_out = split.unit_out_bytes // 4 if split.unit_out_bytes else w.shape[0]
    if isinstance(m, nn.modules.conv._ConvNd):
        spatial = max(1, unit_out // w.shape[0])
        unit_macs = float(unit_out * (w[0].numel()))
    else:
        spatial = max(1, unit_out // w.shape[0])
        unit_macs = float(unit_out * w.shape[1])
    return SuffixProfile(unit_macs, int(unit_out), int(spatial), conv, lin, wbytes, abytes, nodes)


# --------------------------------------------------------------------------------------
# Choices
# --------------------------------------------------------------------------------------


def unit_seconds(cm: CostModel, prof: SuffixProfile, conv: bool, n_params: int, batch: int) -> float:
    """Seconds of the perturbed layer on ``batch`` images."""
    mac = cm.conv_mac if conv else cm.linear_mac
    return mac * prof.unit_macs * batch + cm.weight_byte * 4 * n_params + cm.call


def cell_path(
    cm: CostModel, prof: SuffixProfile, *, k: int, n_params: int, batch: int, n_batches: int, conv: bool,
    delta_ok: bool, from_mask: bool = False, channels: int = 0,
) -> tuple[str, dict[str, float]]:  # fmt: skip
    """The cheapest way (:data:`PATHS`) to produce one cell's faulty layer output.

    Args:
        k: entries the cell changes; n_params: entries of the layer's tensors.
        batch, n_batches: images per prefix batch and batches per evaluation.
        conv: the layer is a convolution.
        delta_ok: the sparse correction applies (finite new values, supported layer).
        from_mask: the cell's change is a mask over every entry (turning it into a list of
            entries costs one pass over n).
        channels: output channels the change touches (0: estimate as min(k, out)).

    Returns:
        (path, seconds per evaluation of each path considered).
    """
    unit = unit_seconds(cm, prof, conv, n_params, batch)
    listing = cm.copy * n_params if from_mask else 0.0  # nonzero(mask) once per cell
    out = {"inplace": listing + n_batches * (2 * cm.scatter * k + 2 * cm.call + unit)}
    if from_mask:  # a list of entries is written and restored in place on either path: no dense copy
        out["dense"] = n_batches * (2 * cm.copy * n_params + unit)
    if delta_ok:
        touched = channels or min(k, prof.unit_out // max(prof.spatial, 1))
        gather = cm.gather_conv if conv else cm.gather
        out["delta"] = listing + n_batches * batch * (
            cm.copy * (prof.unit_out + 2 * touched * prof.spatial) + gather * k * prof.spatial
        ) + n_batches * 6 * cm.call
    path = min(out, key=out.get)
    return path, out


def suffix_seconds(cm: CostModel, prof: SuffixProfile, images: int) -> float:
    """Seconds of one suffix call on ``images`` images: the layers' multiply-accumulates and
    activations (per image), plus their weights read once and a fixed cost per operator (per
    call)."""
    compute = (cm.conv_mac * prof.suffix_conv_macs + cm.linear_mac * prof.suffix_linear_macs) * images
    return compute + cm.act_byte * prof.suffix_act_bytes * images + cm.weight_byte * prof.suffix_weight_bytes \
        + cm.call * prof.suffix_nodes


def suffix_replicas(
    cm: CostModel, prof: SuffixProfile, *, batch: int, per_replica_seconds: float, per_replica_bytes: int, budget: int,
    n_cells: int, cap: int | None = None,
) -> int:  # fmt: skip
    """K: how many cells share one suffix call on a K-fold batch.

    The suffix costs ``F + K V`` per call (:func:`suffix_seconds`: F its fixed cost -- weights
    read once, operator calls --, V per replica); a replica also costs
    ``per_replica_seconds`` to produce. K is the smallest value with ``F / K <= FIXED_SHARE x
    (V + per_replica_seconds)``, clamped to [1, min(cap, n_cells, budget / per_replica_bytes)].
    """
    one = suffix_seconds(cm, prof, batch)
    two = suffix_seconds(cm, prof, 2 * batch)
    per = max(two - one, 1e-12)  # V: what one more replica adds
    fixed = max(one - per, 0.0)  # F
    k = math.ceil(fixed / (FIXED_SHARE * (per + max(per_replica_seconds, 0.0)))) if fixed > 0 else 1
    limit = n_cells if cap is None else min(int(cap), n_cells)
    limit = min(limit, max(1, int(budget // max(per_replica_bytes, 1))))
    return max(1, min(k, limit))


def cost_replicas(split: LayerSplit, device: torch.device, batch: int, n_cells: int) -> int:
    """K for the dense replicas of :func:`netperturb.perturb.engine.runners.run_fast` by the
    cost model (memory aside): :func:`suffix_replicas` with a replica costing the layer on
    ``batch`` images plus writing its tensors into the wide buffer."""
    cm = cost_model(device)
    prof = suffix_profile(split, int(split.probe_logits.shape[0]) if split.probe_logits is not None else 2)
    n_params = sum(int(t.numel()) for t in split.clean_tensors().values())
    conv = isinstance(split.module, nn.modules.conv._ConvNd)
    per = unit_seconds(cm, prof, conv, n_params, batch) + cm.copy * n_params
    return suffix_replicas(cm, prof, batch=batch, per_replica_seconds=per, per_replica_bytes=1, budget=1 << 62,
                           n_cells=n_cells)  # fmt: skip
