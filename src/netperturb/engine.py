"""The performance engine behind :func:`netperturb.grid.run_layer_job`, and the naive reference.

DESIGN.md, "Performance design". A job is one (model, layer, perturbation) with every
level x repeat cell. Three ways to compute it, all giving the same per-cell numbers in fp32:

``"fast"`` (default)
    1. *Clean-prefix reuse.* The network's ``torch.fx`` graph is split at the perturbed layer
       (:func:`split_at_layer`): the *prefix* computes, once per batch of images, every value
       that is still needed after the layer -- the layer's input, and also e.g. the skip
       tensor a ResNet block adds back or the parallel branches an Inception block
       concatenates; the *suffix* takes those values plus the layer's output and returns the
       logits. Any traceable torchvision classifier works, not only ``nn.Sequential``.
       The prefix outputs of all batches are cached when they fit in memory, otherwise
       recomputed once per group of replicas.
    2. *Batched replicas.* K cells of the job are evaluated in one call: their K perturbed
       weight tensors are concatenated along the output dimension into one wider layer, and
       the suffix runs on a K-fold batch (the other live values repeated K times). A BatchNorm
       fed only by the layer joins the replicated unit with the K replicas' affine terms
       concatenated the same way (node knockout zeroes a knocked-out node's BN channel), so
       every replica gets exactly its own affine terms after the shared normalisation
       statistics. K comes from the free memory (GPU: ``torch.cuda.mem_get_info``; CPU:
       MemAvailable / the cgroup limit) and a cap (config ``perturbation.max_replicas``).
    3. *No waste.* No model copies; masks and noise are drawn in bulk on each cell's own CPU
       generator exactly as :mod:`netperturb.perturbations` draws them (same calls in the
       same order, so the numbers do not depend on device or K; tests compare the tensors
       bit for bit), job-level constants such as a layer's weight s.d. are computed once per
       job, each replica is written straight into a buffer kept for the job, and the draws
       run in CPU threads (one generator per cell), the next group's while the device works
       on the current one. Images stay uint8 on the device; normalisation
       (:class:`netperturb.data.Preprocess`) runs there.
    4. *Precision.* ``"fp32"`` is the reference. ``"bf16"`` / ``"fp16"`` run prefix and suffix
       under ``torch.autocast`` (and channels_last on a GPU) while the perturbed layer itself
       computes in fp32; the result table records the precision.
    5. *Less arithmetic where the definition allows it.* Node knockout runs the layer once
       on its clean weights and zeroes each replica's knocked-out channels (a knocked-out
       unit's output is exactly 0: its weights and bias are zero, with a BN-aware knockout
       its BN affine terms too). Cells whose perturbed layer does not depend on the seed
       (knockouts at level 1, deterministic perturbations) are computed once per level.
    Level-0 cells are the clean network by definition: they share one clean evaluation of the
    whole model (bit for bit the baseline in fp32). If the graph cannot be split (the model
    does not trace, the layer is called twice, ...), the job falls back to ``"functional"``
    with a warning in the log.

``"functional"``
    Per cell, the whole network with the perturbed tensors swapped in
    (``torch.func.functional_call``); level-0 cells share one clean evaluation.

``"naive"``
    The reference, written the way the seeds' authors and PyTorchFI users run a grid: per
    cell ``copy.deepcopy`` the model, perturb the copy in place, run the full forward pass
    from the images. Kept for tests and for ``bench/engine_vs_naive.py``.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import logging
import math
import os
import time
import weakref
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from tqdm.auto import tqdm

from .evaluate import Counts, count_logits, evaluate, topk_credit
from .layers import LayerInfo
from .perturbations import GaussianNoise, NodeKnockout, Perturbation, SynapseKnockout, _choose, n_chosen
from .seeds import cell_generator

__all__ = [
    "ENGINES",
    "PRECISIONS",
    "SplitError",
    "LayerSplit",
    "split_at_layer",
    "ReplicaBuilder",
    "choose_replicas",
    "available_memory",
    "precision_context",
    "run_cells",
    "run_fast",
    "run_functional",
    "run_naive",
    "naive_cells",
    "macs_per_image",
]

log = logging.getLogger("netperturb")

#: Ways to compute a job (see the module docstring).
ENGINES = ("fast", "functional", "naive")
#: Precision name -> autocast dtype (None: plain fp32, the reference).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


class SplitError(RuntimeError):
    """The model's graph cannot be split at the layer (the fast engine falls back)."""


def check_precision(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision``.

    Raises:
        ValueError: unknown precision (the message lists the known ones).
    """
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ValueError(f"precision {precision!r} unknown; known: {', '.join(PRECISIONS)}") from None


class _StrictFp32:
    """TF32 off for cuBLAS and cuDNN inside the block (restored after; re-enterable): on
    Ampere and later GPUs cuDNN convolutions default to TF32 (10-bit mantissa), not fp32."""

    def __enter__(self):
        self._saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        return self

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved
        return False


def precision_context(device: torch.device, precision: str):
    """``torch.autocast`` for ``"bf16"``/``"fp16"`` on ``device``. For ``"fp32"`` on a GPU,
    TF32 is switched off in the block so that ``fp32`` means fp32 arithmetic; on the CPU a no-op."""
    dtype = check_precision(precision)
    if dtype is None:
        return _StrictFp32() if device.type == "cuda" else nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _channels_last(device: torch.device, precision: str) -> bool:
    return device.type == "cuda" and precision != "fp32"


# --------------------------------------------------------------------------------------
# Graph split
# --------------------------------------------------------------------------------------


def _is_tensor_node(node: fx.Node) -> bool:
    t = node.meta.get("type")
    return isinstance(t, type) and issubclass(t, Tensor)


def _bytes_per_image(node: fx.Node, batch: int) -> int:
    """Bytes per image of a node's value (tensors, or tuples/lists of them) from ShapeProp."""
    from torch.fx.passes.shape_prop import TensorMetadata

    def walk(m) -> int:
        if isinstance(m, TensorMetadata):
            return math.prod(m.shape) * torch.empty((), dtype=m.dtype).element_size()
        if isinstance(m, (list, tuple)):
            return sum(walk(v) for v in m)
        if isinstance(m, dict):
            return sum(walk(v) for v in m.values())
        return 0

    return walk(node.meta.get("tensor_meta")) // max(batch, 1)


@dataclass
class LayerSplit:
    """A network cut at one Conv2d/Linear layer (built by :func:`split_at_layer`).

    Attributes:
        prefix: ``prefix(x) -> tuple`` of the live values (tensors (B, ...)) for input
            ``x`` (B, C, H, W) (the preprocessed images).
        suffix: ``suffix(unit_out, *values) -> logits`` (B', classes), where ``unit_out``
            is the output of the replicated unit and ``values`` are ``live[i]`` for ``i``
            in ``suffix_live`` (each repeated K times along the batch for K replicas).
        module: the perturbed layer (Conv2d or Linear).
        bn: the BatchNorm that is fed only by the layer, computed inside the unit; or None.
        unit_input: index of the layer's input among the live values.
        suffix_live: indices of the live values the suffix reads.
        live_bytes: bytes per image of the live values (fp32 probe).
        suffix_peak_bytes: estimated peak bytes per image of the suffix's activations.
        unit_out_bytes: bytes per image of the unit's output (one replica).
    """

    prefix: fx.GraphModule
    suffix: fx.GraphModule
    module: nn.Module
    bn: nn.Module | None
    unit_input: int
    suffix_live: list[int]
    live_bytes: int = 0
    suffix_peak_bytes: int = 0
    unit_out_bytes: int = 0
    roles: tuple[str, ...] = field(default=())
    probe_logits: Tensor | None = field(default=None, repr=False)  # the full model's output on the example

    @property
    def groups(self) -> int:
        return int(getattr(self.module, "groups", 1))

    def clean_tensors(self) -> dict[str, Tensor]:
        """role -> the model's own tensor for every role of the unit."""
        out = {"weight": self.module.weight}
        if self.module.bias is not None:
            out["bias"] = self.module.bias
        if self.bn is not None:
            out["bn_weight"] = self.bn.weight
            out["bn_bias"] = self.bn.bias
        return out

    def unit(self, x: Tensor, wide: Mapping[str, Tensor], k: int) -> Tensor:
        """The layer (and its BN) for ``k`` replicas at once.

        Args:
            x: the layer's input (B, ...).
            wide: role -> replicas' tensors widened by :func:`widen` (``weight``
                (k * out, ...), ``bias``/``bn_weight``/``bn_bias``/``bn_mean``/``bn_var``
                (k * out,)).
            k: number of replicas.

        Returns:
            (k * B, ...) -- replica-major: rows ``r * B .. (r + 1) * B`` are replica r.
        """
        m = self.module
        if isinstance(m, nn.Conv2d):
            y = m._conv_forward(x, wide["weight"], wide.get("bias"))
        else:
            y = F.linear(x, wide["weight"], wide.get("bias"))
        if self.bn is not None:
            bn = self.bn
            use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
            y = F.batch_norm(
                y, wide.get("bn_mean"), wide.get("bn_var"), wide.get("bn_weight"), wide.get("bn_bias"),
                use_batch_stats, 0.0, bn.eps,
            )  # fmt: skip
        return _unwiden_output(y, k, self.groups, conv=isinstance(m, nn.Conv2d))

    def forward(self, x: Tensor) -> Tensor:
        """The clean network through prefix, unit (K = 1) and suffix: logits (B, classes).
        Equals ``model(x)``; the tests check it bit for bit."""
        live = self.prefix(x)
        wide = widen_roles([self.clean_tensors()], self)
        u = self.unit(live[self.unit_input], wide, 1)
        return self.suffix(u, *[live[i] for i in self.suffix_live])


def widen(tensors: Sequence[Tensor], groups: int = 1) -> Tensor:
    """Concatenate K replicas' tensors (each (out, ...)) along the output dimension.

    With ``groups`` > 1 (grouped convolution), output channels are arranged (group,
    replica, channel-in-group), so that each replica's filters of group g still read the
    input channels of group g. Returns (K * out, ...).
    """
    if groups == 1 or tensors[0].ndim == 0:
        return torch.cat(list(tensors), 0) if len(tensors) > 1 else tensors[0]
    out = tensors[0].shape[0]
    rest = tensors[0].shape[1:]
    stacked = torch.stack([t.reshape(groups, out // groups, *rest) for t in tensors], dim=1)
    return stacked.reshape(len(tensors) * out, *rest)


def _unwiden_output(y: Tensor, k: int, groups: int, *, conv: bool) -> Tensor:
    """(B, ..., k * out [, H, W]) wide output -> (k * B, ..., out [, H, W]), replica-major."""
    if k == 1:
        return y
    b = y.shape[0]
    if conv:
        c = y.shape[1] // k
        # channels are (group, replica, channel-in-group)
        y = y.reshape(b, groups, k, c // groups, *y.shape[2:]).movedim(2, 0)
        return y.reshape(k * b, c, *y.shape[-2:])
    out = y.shape[-1] // k
    y = y.reshape(*y.shape[:-1], k, out).movedim(-2, 0)
    return y.reshape(k * b, *y.shape[2:])


def _bn_stats(split: LayerSplit, k: int) -> dict[str, Tensor]:
    """The unit's BatchNorm running statistics for k replicas (widened like the weights)."""
    if split.bn is None or split.bn.running_mean is None:
        return {}
    return {
        "bn_mean": widen([split.bn.running_mean] * k, split.groups),
        "bn_var": widen([split.bn.running_var] * k, split.groups),
    }


def widen_roles(replicas: Sequence[Mapping[str, Tensor]], split: LayerSplit) -> dict[str, Tensor]:
    """role -> widened tensor for the unit, adding the BN's running statistics."""
    wide = {role: widen([r[role] for r in replicas], split.groups) for role in replicas[0]}
    wide.update(_bn_stats(split, len(replicas)))
    return wide


def _eliminate_dead_code(graph: fx.Graph, root: nn.Module) -> None:
    """Remove nodes whose value nobody reads, unless they may mutate something in place
    (``x.relu_()``, ``operator.iadd``, an ``inplace=True`` module) or are impure."""
    for node in reversed(list(graph.nodes)):
        if node.users or node.op not in ("get_attr", "call_function", "call_method", "call_module"):
            continue
        name = str(getattr(node.target, "__name__", node.target))
        if name.endswith("_") or (getattr(node.target, "__module__", "") in ("_operator", "operator") and name.startswith("i")):
            continue
        if node.op == "call_module" and getattr(root.get_submodule(node.target), "inplace", False):
            continue
        if node.op != "call_module" and node.is_impure():
            continue
        graph.erase_node(node)


_TRACES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _traced(model: nn.Module, example: Tensor) -> tuple[fx.GraphModule, Tensor]:
    """``torch.fx.symbolic_trace(model)`` with every node's type and shape recorded
    (``ShapeProp``) on ``example``, and the model's output on it. Cached per model and
    example (and the version counters of its tensors, so an in-place change of the weights
    invalidates it): the jobs of one model in a process trace it once.

    Raises:
        SplitError: the model does not trace, or the traced graph does not run.
    """
    versions = tuple(t._version for t in [*model.parameters(), *model.buffers()])
    hit = _TRACES.get(model)
    if (
        hit is not None
        and hit[3] == versions
        and hit[1].shape == example.shape
        and hit[1].device == example.device
        and torch.equal(hit[1], example)
    ):
        return hit[0], hit[2]
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # dynamic control flow, unsupported ops, ...
        raise SplitError(f"the model does not trace with torch.fx ({type(e).__name__}: {e})") from None
    try:
        from torch.fx.passes.shape_prop import ShapeProp

        with torch.no_grad():
            probe = ShapeProp(gm).propagate(example)
    except Exception as e:
        raise SplitError(f"the traced graph does not run on the example ({type(e).__name__}: {e})") from None
    _TRACES[model] = (gm, example.clone(), probe, versions)
    return gm, probe


def split_at_layer(model: nn.Module, layer: LayerInfo | str, example: Tensor, *, bn: str | None = None) -> LayerSplit:
    """Cut ``model``'s ``torch.fx`` graph at ``layer`` into prefix, replicated unit and suffix.

    The prefix computes every value that is live across the layer call: the layer's input
    and every tensor computed without the layer's output that a later node reads (a
    ResNet block's skip input, the other branches of an Inception block). Values that
    depend on the input but are not batch tensors (``x.shape``, ``x.size(0)``) and constants
    (``get_attr``) are recomputed inside the suffix so that the suffix works on a K-fold
    batch. A BatchNorm whose only input is the layer is put into the unit (``layer.bn``).

    Args:
        model: in eval mode.
        layer: :class:`LayerInfo` (its ``bn`` is used) or a module path.
        example: a small input batch (b >= 1, ideally 2), used to find which values are
            tensors with a batch dimension and their sizes.
        bn: module path of the following BatchNorm when ``layer`` is a path.

    Raises:
        SplitError: the model does not trace, the layer is not called exactly once with one
            input, a live value has no batch dimension, or the model does not return a tensor.
    """
    path = layer.path if isinstance(layer, LayerInfo) else layer
    bn_path = layer.bn if isinstance(layer, LayerInfo) else bn
    gm, probe = _traced(model, example)
    graph = gm.graph
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise SplitError(f"the model takes {len(placeholders)} inputs, expected 1")
    hits = [n for n in nodes if n.op == "call_module" and n.target == path]
    if len(hits) != 1:
        raise SplitError(f"layer {path} is called {len(hits)} times in the graph, expected once")
    L = hits[0]
    if len(L.args) != 1 or L.kwargs or not isinstance(L.args[0], fx.Node):
        raise SplitError(f"layer {path} is not called with one tensor input")
    unit = [L]
    bn_mod = None
    if bn_path is not None:
        users = list(L.users)
        if len(users) != 1 or users[0].op != "call_module" or users[0].target != bn_path:
            raise SplitError(f"layer {path}: BatchNorm {bn_path} is not its only user in the graph")
        unit.append(users[0])
        bn_mod = model.get_submodule(bn_path)
        if not isinstance(bn_mod, _BN_TYPES):
            raise SplitError(f"{bn_path} is not a BatchNorm")
    batch = int(example.shape[0])
    out_node = nodes[-1]
    if out_node.op != "output" or not (isinstance(out_node.args[0], fx.Node) and _is_tensor_node(out_node.args[0])):
        raise SplitError("the model does not return one tensor of logits")

    dirty: set[fx.Node] = set()  # nodes that read the layer's output, directly or not
    depends: set[fx.Node] = set()  # nodes that read the input images
    for n in nodes:
        ins = n.all_input_nodes
        if n is L or any(a in dirty for a in ins):
            dirty.add(n)
        if n.op == "placeholder" or any(a in depends for a in ins):
            depends.add(n)
    unit_set = set(unit)
    suffix_set = dirty - unit_set

    live: list[fx.Node] = []

    def need(u: fx.Node) -> None:
        if u in suffix_set or u in unit_set or u in live:
            return
        if u in depends and _is_tensor_node(u):
            meta = u.meta.get("tensor_meta")
            if meta is None or len(meta.shape) == 0 or meta.shape[0] != batch:
                raise SplitError(f"value {u.name} is live across the layer but has no batch dimension")
            live.append(u)
        else:  # recompute in the suffix (shapes, sizes, constants)
            suffix_set.add(u)
            for a in u.all_input_nodes:
                need(a)

    for n in list(suffix_set):
        for a in n.all_input_nodes:
            need(a)
    ordered_suffix = [n for n in nodes if n in suffix_set]
    suffix_live_nodes = [v for v in live]
    layer_in = L.args[0]
    if layer_in not in live:
        if layer_in in depends and _is_tensor_node(layer_in):
            live.append(layer_in)
        else:
            raise SplitError(f"layer {path}: its input does not come from the images")

    # prefix: x -> live values
    pg = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in nodes:
        if n in dirty or n.op == "output":
            continue
        env[n] = pg.node_copy(n, lambda a: env[a])
    pg.output(tuple(env[v] for v in live))
    _eliminate_dead_code(pg, gm)
    prefix = fx.GraphModule(gm, pg)

    # suffix: (unit_out, *live read by the suffix) -> logits
    sg = fx.Graph()
    senv: dict[fx.Node, fx.Node] = {unit[-1]: sg.placeholder("unit_out")}
    for i, v in enumerate(suffix_live_nodes):
        senv[v] = sg.placeholder(f"live_{i}")
    for n in ordered_suffix:
        senv[n] = sg.node_copy(n, lambda a: senv[a])
    _eliminate_dead_code(sg, gm)
    suffix = fx.GraphModule(gm, sg)

    # memory estimates (bytes per image) from the probe
    size = {n: _bytes_per_image(n, batch) for n in nodes}
    last_use: dict[fx.Node, fx.Node] = {}
    for n in ordered_suffix:
        for a in n.all_input_nodes:
            last_use[a] = n
    cur = size[unit[-1]] + sum(size[v] for v in suffix_live_nodes)
    peak = cur
    for n in ordered_suffix:
        cur += size[n]
        peak = max(peak, cur)
        for a in set(n.all_input_nodes):
            if last_use.get(a) is n:
                cur -= size[a]
    split = LayerSplit(
        prefix=prefix,
        suffix=suffix,
        module=model.get_submodule(path),
        bn=bn_mod,
        unit_input=live.index(layer_in),
        suffix_live=[live.index(v) for v in suffix_live_nodes],
        live_bytes=sum(size[v] for v in live),
        suffix_peak_bytes=peak,
        unit_out_bytes=size[unit[-1]],
    )
    split.roles = tuple(split.clean_tensors())
    split.probe_logits = probe
    return split


def macs_per_image(split: LayerSplit, example: Tensor) -> dict[str, float]:
    """Multiply-accumulates per image of the prefix and of unit + suffix (one replica),
    counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix
    products; MACs = FLOPs / 2) on ``example`` (b, C, H, W).

    Returns:
        ``{"prefix": ..., "suffix": ..., "unit": ...}`` (the suffix includes the perturbed
        layer and its BN, which ``unit`` counts alone).
    """
    from torch.utils.flop_counter import FlopCounterMode

    b = int(example.shape[0])
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            live = split.prefix(example)
        prefix = fc.get_total_flops()
        wide = widen_roles([split.clean_tensors()], split)
        with FlopCounterMode(display=False) as fc:
            u = split.unit(live[split.unit_input], wide, 1)
        unit = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            split.suffix(u, *[live[i] for i in split.suffix_live])
        suffix = unit + fc.get_total_flops()
    return {"prefix": prefix / 2 / b, "suffix": suffix / 2 / b, "unit": unit / 2 / b}


# --------------------------------------------------------------------------------------
# Perturbed replicas
# --------------------------------------------------------------------------------------


class ReplicaBuilder:
    """Draws the perturbed tensors of cells and stacks them into the wide unit.

    For the built-in perturbations (exactly :class:`SynapseKnockout`, :class:`NodeKnockout`,
    :class:`GaussianNoise`) the *draw* (random-key selection / ``randn`` on the cell's CPU
    generator, in the same order as their ``_apply``) is separated from the *application*
    (zero the chosen entries / add the noise, on the device), and the layer's weight s.d.
    for the noise is computed once per job (on the CPU copy, so it does not depend on the
    device). Any other :class:`~netperturb.perturbations.Perturbation` is called as it is.
    Either way the tensors equal ``perturbation(params, level, generator)`` bit for bit
    (tests check it).
    """

    def __init__(self, perturbation: Perturbation, params: Mapping[str, Tensor]):
        self.perturbation = perturbation
        self.params = dict(params)
        self.kind = {SynapseKnockout: "synapse", NodeKnockout: "node", GaussianNoise: "noise"}.get(type(perturbation))
        self._std: dict[str, float] = {}
        self._buffers: dict[str, Tensor] = {}
        if self.kind == "noise":
            for role in self._noise_roles():
                t = self.params[role].detach()
                self._std[role] = t.cpu().double().std(unbiased=False).item() if t.numel() > 1 else 0.0

    def _noise_roles(self) -> list[str]:
        roles = ["weight"]
        if self.perturbation.include_bias and self.params.get("bias") is not None:
            roles.append("bias")
        return roles

    def draw(self, level: float, seed: int) -> dict[str, tuple[str, Tensor]]:
        """role -> (op, CPU tensor) for one cell: ``("flat", idx)`` zero flat entries,
        ``("rows", idx)`` zero rows, ``("add", delta)`` add, ``("set", tensor)`` replace.
        Thread-safe (reads the parameters only). Level 0 returns ``{}``."""
        p = self.perturbation
        level = p.check_level(level)
        if level == 0:
            return {}
        g = cell_generator(seed)
        out: dict[str, tuple[str, Tensor]] = {}
        if self.kind == "synapse":
            roles = ["weight"] + (["bias"] if p.include_bias and self.params.get("bias") is not None else [])
            for role in roles:
                n = self.params[role].numel()
                out[role] = ("flat", _choose(n, n_chosen(level, n), g))
        elif self.kind == "node":
            w = self.params["weight"]
            idx = _choose(w.shape[0], n_chosen(level, w.shape[0]), g)
            roles = ["weight", "bias"] + (["bn_weight", "bn_bias"] if p.bn_aware else [])
            for role in roles:
                if self.params.get(role) is not None:
                    out[role] = ("rows", idx)
        elif self.kind == "noise":
            for role in self._noise_roles():
                t = self.params[role]
                noise = torch.randn(t.shape, generator=g, dtype=torch.float32)
                out[role] = ("add", noise * (level * self._std[role]))
        else:
            new = p(self.params, level, g)
            out = {role: ("set", t) for role, t in new.items()}
        return out

    def apply(self, draw: Mapping[str, tuple[str, Tensor]]) -> dict[str, Tensor]:
        """role -> the cell's tensor on the parameters' device (clean where not drawn).

        Raises:
            ValueError: the draw changes a role the unit does not have.
        """
        unknown = set(draw) - set(self.params)
        if unknown:
            raise ValueError(f"{self.perturbation.name}: changes {sorted(unknown)}, not among {sorted(self.params)}")
        out = {}
        for role, clean in self.params.items():
            if role not in draw:
                out[role] = clean
                continue
            op, t = draw[role]
            if op == "set":
                out[role] = t
                continue
            src = clean.detach()
            if op == "add":
                out[role] = src + t.to(device=src.device, dtype=src.dtype)
            elif op == "flat":
                new = src.clone(memory_format=torch.contiguous_format)
                new.view(-1).index_fill_(0, t.to(src.device), 0)
                out[role] = new
            else:  # rows
                out[role] = src.clone().index_fill_(0, t.to(src.device), 0)
        return out

    def cell(self, level: float, seed: int) -> dict[str, Tensor]:
        """The tensors of the roles this cell changes (what the perturbation returns)."""
        d = self.draw(level, seed)
        full = self.apply(d)
        return {role: full[role] for role in d}

    def build(self, draws: Sequence[Mapping[str, tuple[str, Tensor]]], groups: int = 1) -> dict[str, Tensor]:
        """role -> the K = len(draws) replicas' tensors widened as :func:`widen` does.

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
                op, t = d.get(role, (None, None))
                if op == "add":
                    torch.add(src, t.to(device=src.device, dtype=src.dtype), out=slot)
                    continue
                slot.copy_(t if op == "set" else src)
                if op == "flat":
                    slot.view(-1).index_fill_(0, t.to(src.device), 0)
                elif op == "rows":
                    slot.index_fill_(0, t.to(src.device), 0)
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


def _replica_counts(logits: Tensor, labels: Tensor, k: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per replica (top-1 sum, top-5 sum, loss sum) as 0-dim tensors (no host sync).

    Each value is computed exactly as :func:`netperturb.evaluate.count_logits` computes it
    on that replica's (B, C) logits, so the sums agree with the other engines bit for bit.
    """
    logits = logits.float()
    b = labels.shape[0]
    rep = labels.repeat(k)
    c1 = topk_credit(logits, rep, 1)
    c5 = topk_credit(logits, rep, min(5, logits.shape[1]))
    out = []
    for r in range(k):
        sl = slice(r * b, (r + 1) * b)
        loss = F.cross_entropy(logits[sl], labels, reduction="sum")
        out.append((c1[sl].clone().sum(), c5[sl].clone().sum(), loss))
    return out


def _to_counts(parts: Sequence[tuple[int, Tensor, Tensor, Tensor]]) -> Counts:
    """Sum per-batch parts in batch order, as :func:`netperturb.evaluate.evaluate` does."""
    if not parts:
        return Counts()
    t1 = torch.stack([p[1] for p in parts]).tolist()
    t5 = torch.stack([p[2] for p in parts]).tolist()
    ls = torch.stack([p[3] for p in parts]).tolist()
    total = Counts()
    for (n, *_), a, b, c in zip(parts, t1, t5, ls):
        total += Counts(n=n, top1=a, top5=b, loss_sum=c)
    return total


# --------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------


def _layer_params(model: nn.Module, layer: LayerInfo) -> dict[str, Tensor]:
    named = dict(model.named_parameters())
    return {role: named[name] for role, name in layer.param_names().items() if name in named}


def _clean_counts(model, images, labels, preprocess, batch_size, precision) -> Counts:
    """The whole unperturbed model; in fp32 exactly :func:`netperturb.evaluate.evaluate`."""
    if precision == "fp32":
        return evaluate(model, images, labels, preprocess, batch_size=batch_size)
    device = next(model.parameters()).device
    total = Counts()
    with torch.inference_mode(), precision_context(device, precision):
        for start in range(0, len(labels), batch_size):
            x = preprocess(images[start : start + batch_size].to(device))
            if _channels_last(device, precision):
                x = x.contiguous(memory_format=torch.channels_last)
            total += count_logits(model(x), labels[start : start + batch_size].to(device))
    return total


def run_functional(
    job, model: nn.Module, images: Tensor, labels: Tensor, preprocess, *,
    batch_size: int = 256, precision: str = "fp32", progress: bool = True,
) -> list[Counts]:  # fmt: skip
    """Per cell, the whole network with the perturbed tensors swapped in
    (``torch.func.functional_call``); level-0 cells share one clean evaluation.

    Returns:
        One :class:`Counts` per cell of ``job.cells()``, in that order.
    """
    params = _layer_params(model, job.layer)
    names = job.layer.param_names()
    device = next(model.parameters()).device
    clean: Counts | None = None
    out = []
    cells = list(job.cells())
    for level, _repeat, seed in tqdm(cells, desc=_desc(job), disable=not progress, mininterval=5):
        new = job.perturbation(params, level, cell_generator(seed))
        if not new:
            if clean is None:
                clean = _clean_counts(model, images, labels, preprocess, batch_size, precision)
            out.append(clean)
            continue
        overrides = {names[role]: t for role, t in new.items()}
        with precision_context(device, precision):
            out.append(evaluate(model, images, labels, preprocess, batch_size=batch_size, overrides=overrides))
    return out


def naive_cells(
    job,
    model: nn.Module,
    batches: Callable[[], Iterable[tuple[Tensor, Tensor]]],
    *,
    progress: bool = True,
    on_cell: Callable[[int], None] | None = None,
) -> list[Counts]:
    """The naive reference loop over ``job``'s cells, as the seeds' authors and PyTorchFI
    users run a grid: per cell, ``copy.deepcopy(model)``, perturb the copy in place with
    ``job.perturbation``, and run the full forward pass over ``batches()`` (a fresh
    iteration per cell: pre-processed (x, y) pairs, e.g. a DataLoader that decodes the
    JPEGs again every time). fp32, no reuse of anything between cells.

    Returns:
        One :class:`Counts` per cell of ``job.cells()``, in that order.
    """
    device = next(model.parameters()).device
    out = []
    for i, (level, _repeat, seed) in enumerate(
        tqdm(list(job.cells()), desc=_desc(job) + " (naive)", disable=not progress, mininterval=5)
    ):
        net = copy.deepcopy(model)
        params = _layer_params(net, job.layer)
        with torch.no_grad():
            for role, t in job.perturbation(params, level, cell_generator(seed)).items():
                params[role].copy_(t)
            counts = Counts()
            for x, y in batches():
                counts += count_logits(net(x.to(device)), y.to(device))
        out.append(counts)
        del net
        if on_cell is not None:
            on_cell(i)
    return out


def run_naive(
    job, model: nn.Module, images: Tensor, labels: Tensor, preprocess, *, batch_size: int = 256, progress: bool = True
) -> list[Counts]:
    """:func:`naive_cells` on uint8 ``images`` (N, C, H, W), normalised per batch per cell."""
    device = next(model.parameters()).device

    def batches():
        for start in range(0, len(labels), batch_size):
            yield preprocess(images[start : start + batch_size].to(device)), labels[start : start + batch_size]

    return naive_cells(job, model, batches, progress=progress)


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


def run_fast(
    job,
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    preprocess,
    *,
    batch_size: int = 256,
    precision: str = "fp32",
    max_replicas: int | None = None,
    memory_fraction: float = 0.5,
    draw_workers: int | None = None,
    progress: bool = True,
    plan: FastPlan | None = None,
) -> list[Counts]:
    """The fast engine (module docstring): prefix once per batch, K replicas per suffix call.

    Args:
        job: a :class:`netperturb.grid.LayerJob`.
        model: in eval mode, on its device.
        images: uint8 (N, C, H, W); labels: int64 (N,).
        preprocess: uint8 -> model input (on the device).
        batch_size: images per prefix call (the suffix sees K times as many).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        max_replicas: cap on K (None: memory only).
        memory_fraction: share of the free memory for replicas and the prefix cache.
        draw_workers: CPU threads drawing cells (each cell has its own generator, so
            they draw in parallel) while the device computes the previous group; 0 draws
            in the main thread. Default: torch's intra-op thread count on the CPU (a job
            whose time goes into drawing masks, e.g. synapse knockout of a large dense layer,
            then uses every core it was given), up to 8 of the usable cores with a GPU.
        plan: filled with the decisions taken.

    Returns:
        One :class:`Counts` per cell of ``job.cells()``, in that order.

    Raises:
        ValueError: model in training mode, unknown precision.
    """
    plan = plan if plan is not None else FastPlan()
    check_precision(precision)
    if model.training:
        raise ValueError("the fast engine needs the model in eval() mode")
    device = next(model.parameters()).device
    cells = list(job.cells())
    n = int(labels.shape[0])
    if n == 0:
        return [Counts() for _ in cells]
    cl = _channels_last(device, precision)

    images_dev = images
    if device.type == "cuda" and images.device.type != "cuda":
        if images.numel() * images.element_size() < 0.3 * available_memory(device):
            images_dev = images.to(device)
        else:
            images_dev = images.pin_memory()
    labels_dev = labels.to(device)

    def pre(start: int, end: int) -> Tensor:
        x = preprocess(images_dev[start:end].to(device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last) if cl and x.ndim == 4 else x

    with torch.inference_mode():
        example = pre(0, min(n, 2))
        try:
            split = split_at_layer(model, job.layer, example)
        except SplitError as e:
            plan.fallback = str(e)
            log.warning("%s: fast engine not applicable (%s); using the functional engine", _desc(job), e)
            return run_functional(job, model, images, labels, preprocess, batch_size=batch_size,
                                  precision=precision, progress=progress)  # fmt: skip
        # structural check on the example, in fp32: prefix + unit + suffix == the whole model
        ref, got = split.probe_logits, split.forward(example)
        if ref.shape != got.shape or not torch.allclose(ref, got, rtol=1e-4, atol=1e-5 * float(ref.abs().max()) + 1e-6):
            plan.fallback = "prefix + suffix differs from the full forward pass"
            log.warning("%s: %s; using the functional engine", _desc(job), plan.fallback)
            return run_functional(job, model, images, labels, preprocess, batch_size=batch_size,
                                  precision=precision, progress=progress)  # fmt: skip

    builder = ReplicaBuilder(job.perturbation, split.clean_tensors())

    batches = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
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
    cache_bytes = n * split.live_bytes
    plan.cached_prefix = cache_bytes <= budget // 2
    if plan.cached_prefix:
        budget -= cache_bytes
    k = choose_replicas(split, min(batch_size, n), max(len(perturbed), 1), budget=budget, max_replicas=max_replicas)
    plan.replicas = k
    if draw_workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        draw_workers = torch.get_num_threads() if device.type == "cpu" else min(8, cores)
    plan.draw_workers = draw_workers
    log.info(
        "%s: fast engine, %d replicas per suffix call, prefix %s, %d batches of %d, %s",
        _desc(job), k, "cached" if plan.cached_prefix else "recomputed per group", len(batches), batch_size, precision,
    )  # fmt: skip

    results: list[Counts | None] = [None] * len(cells)
    if len(perturbed) < len(cells):
        clean = _clean_counts(model, images, labels, preprocess, batch_size, precision)
        for i, (level, _, _) in enumerate(cells):
            if level == 0:
                results[i] = clean
    groups = [perturbed[i : i + k] for i in range(0, len(perturbed), k)]
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
    reuse_clean_unit = builder.kind == "node" and (
        split.bn is None or (job.perturbation.bn_aware and split.bn.running_mean is not None)
    )
    plan.reuse_clean_unit = reuse_clean_unit
    if reuse_clean_unit:
        clean_wide = {role: t.clone() for role, t in builder.build([{}], split.groups).items()}
        clean_wide.update(_bn_stats(split, 1))
        if cl and clean_wide["weight"].ndim == 4:
            clean_wide["weight"] = clean_wide["weight"].contiguous(memory_format=torch.channels_last)
        channel_dim = 1 if isinstance(split.module, nn.Conv2d) else -1

    bar = tqdm(total=len(cells), desc=_desc(job), disable=not progress, mininterval=5)
    bar.update(len(cells) - len(perturbed) - len(same_as))
    try:
        with torch.inference_mode():
            cache = None
            if plan.cached_prefix and groups:
                with autocast:
                    cache = [split.prefix(pre(s, e)) for s, e in batches]
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
                for bi, (s, e) in enumerate(batches):
                    if cache is not None:
                        live = cache[bi]
                    else:
                        with autocast:
                            live = split.prefix(pre(s, e))
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
                    reps_live = [live[i].repeat(kk, *([1] * (live[i].ndim - 1))) for i in split.suffix_live]
                    with autocast:
                        logits = split.suffix(u, *reps_live)
                    for r, c in enumerate(_replica_counts(logits, labels_dev[s:e], kk)):
                        parts[r].append((e - s, *c))
                    del u, reps_live, logits
                for r, i in enumerate(group):
                    results[i] = _to_counts(parts[r])
                bar.update(kk + sum(1 for j in same_as.values() if j in group))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    for i, j in same_as.items():
        results[i] = results[j]
    return results  # type: ignore[return-value]


def _deterministic(perturbation: Perturbation, level: float) -> bool:
    """True when the perturbed tensors at ``level`` do not depend on the cell's generator:
    a perturbation with ``stochastic = False`` (e.g. the synaptic filters), or a synapse /
    node knockout at level 1 (everything is knocked out)."""
    if not getattr(perturbation, "stochastic", True):
        return True
    return isinstance(perturbation, (SynapseKnockout, NodeKnockout)) and float(level) >= 1.0


def run_cells(
    job,
    loaded,
    images: Tensor,
    labels: Tensor,
    *,
    engine: str = "fast",
    batch_size: int = 256,
    precision: str = "fp32",
    max_replicas: int | None = None,
    progress: bool = True,
) -> list[Counts]:
    """Counts of every cell of ``job`` (a :class:`netperturb.grid.LayerJob`) for
    ``loaded`` (a :class:`netperturb.checkpoints.LoadedModel`) with ``engine``.

    Raises:
        ValueError: unknown engine or precision; the naive engine with a precision other
            than fp32.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r} unknown; known: {', '.join(ENGINES)}")
    check_precision(precision)
    model, pre = loaded.model, loaded.preprocess
    if engine == "fast":
        return run_fast(job, model, images, labels, pre, batch_size=batch_size, precision=precision,
                        max_replicas=max_replicas, progress=progress)  # fmt: skip
    if engine == "functional":
        return run_functional(job, model, images, labels, pre, batch_size=batch_size, precision=precision, progress=progress)
    if precision != "fp32":
        raise ValueError("the naive engine is the fp32 reference; precision must be fp32")
    with precision_context(next(model.parameters()).device, "fp32"):
        return run_naive(job, model, images, labels, pre, batch_size=batch_size, progress=progress)
