"""Clean-prefix reuse: the model's ``torch.fx`` graph split at the perturbed layer, and widened layers
(the Design page of the docs, "The engine" 2-3)."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from netperturb.core.layers import LayerInfo

__all__ = ["SplitError", "LayerSplit", "widen", "widen_roles", "split_at_layer", "macs_per_image"]


_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


class SplitError(RuntimeError):
    """The model's graph cannot be split at the layer (the fast engine falls back)."""


# --------------------------------------------------------------------------------------
# Graph split
# --------------------------------------------------------------------------------------


def _is_tensor_node(node: fx.Node) -> bool:
    t = node.meta.get("type")
    return isinstance(t, type) and issubclass(t, Tensor)


class _TensorMeta(NamedTuple):
    """Shape and dtype of a node's tensor value (``node.meta["tensor_meta"]``)."""

    shape: torch.Size
    dtype: torch.dtype


def _meta_of(value):
    """``_TensorMeta`` of a tensor, the same structure for tuples / lists / dicts of them, else None."""
    if isinstance(value, Tensor):
        return _TensorMeta(value.shape, value.dtype)
    if isinstance(value, (list, tuple)):
        return [_meta_of(v) for v in value] if isinstance(value, list) else tuple(_meta_of(v) for v in value)
    if isinstance(value, dict):
        return {k: _meta_of(v) for k, v in value.items()}
    return None


class _ShapeRecorder(fx.Interpreter):
    """Runs a traced graph and records each node's ``tensor_meta`` (shape, dtype). Does what
    ``torch.fx.passes.shape_prop.ShapeProp`` does for this module, without its import of
    sympy (487 modules; ~5 s of CPU time, measured on a loaded 2-core VM, in every job process
    that splits a network)."""

    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        n.meta["type"] = type(result)
        n.meta["tensor_meta"] = _meta_of(result)
        return result


def _bytes_per_image(node: fx.Node, batch: int) -> int:
    """Bytes per image of a node's value (tensors, or tuples/lists of them), from its recorded shape."""

    def walk(m) -> int:
        if isinstance(m, _TensorMeta):
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

    def unit_each(self, x: Tensor, replicas: Sequence[Mapping[str, Tensor]]) -> Tensor:
        """The layer (and its BN) for k replicas, each on its *own* input.

        :meth:`unit` feeds one input to every replica; here replica r reads rows
        ``r * B .. (r + 1) * B`` of ``x`` (e.g. adversarial images made against replica r).
        Each replica runs :meth:`unit` with K = 1 on its rows with its own tensors: the same
        operation on the same shapes and memory formats as one replica alone, so every
        replica's output equals it bit for bit (a grouped convolution or a batched matrix
        product over replicas would use other kernels and round differently; chosen).

        Args:
            x: (k * B, ...) replica-major layer inputs.
            replicas: k dicts role -> tensor, as :func:`widen_roles` takes them.

        Returns:
            (k * B, ...) replica-major, as :meth:`unit`.
        """
        k = len(replicas)
        b = x.shape[0] // k
        outs = [self.unit(x[r * b : (r + 1) * b], widen_roles([rep], self), 1) for r, rep in enumerate(replicas)]
        return outs[0] if k == 1 else torch.cat(outs)

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
    """``torch.fx.symbolic_trace(model)`` with every node's shape and dtype recorded
    (:class:`_ShapeRecorder`) on ``example``, and the model's output on it. Cached per model and
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
        with torch.no_grad():
            probe = _ShapeRecorder(gm).run(example)
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
