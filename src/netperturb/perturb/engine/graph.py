"""Clean-prefix reuse: the model's ``torch.fx`` graph split at the perturbed layer, and widened layers
(the Design page of the docs, "The engine" 2-3)."""

from __future__ import annotations

import inspect
import math
import weakref
from typing import NamedTuple

import torch
from torch import Tensor, fx, nn

from netperturb.core.layers import LayerInfo
from netperturb.perturb.engine.units import LayerSplit, _bn_stats, standard_forward, widen, widen_roles

__all__ = ["SplitError", "LayerSplit", "widen", "widen_roles", "split_at_layer", "macs_per_image", "trace_model"]


_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


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

    def __init__(self, gm: fx.GraphModule, key: str = "tensor_meta"):
        super().__init__(gm)
        self.key = key

    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        if self.key == "tensor_meta":
            n.meta["type"] = type(result)
        n.meta[self.key] = _meta_of(result)
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


def _drop_specialised_inputs(gm: fx.GraphModule) -> None:
    """Remove the placeholders of arguments that ``concrete_args`` fixed to their defaults,
    with the guard nodes that check them (``_assert_is_none``, ``torch._assert``), when
    nothing else reads them."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    changed = False
    for ph in placeholders[1:]:
        closure, todo = set(), [ph]
        while todo:
            n = todo.pop()
            for u in n.users:
                if u not in closure:
                    closure.add(u)
                    todo.append(u)
        if any(u.op == "output" for u in closure):
            continue
        for n in reversed(list(gm.graph.nodes)):
            if n in closure:
                gm.graph.erase_node(n)
        gm.graph.erase_node(ph)
        changed = True
    if changed:
        gm.recompile()


def trace_model(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(model)``, with every ``forward`` argument after the first that
    has a default fixed to it (``concrete_args``) and dropped from the graph's inputs.

    timm's ``VisionTransformer.forward(x, attn_mask=None, is_causal=False)`` traces to a
    graph of 3 inputs; fixed to their defaults (what ``model(x)`` runs), it has one.

    Raises:
        SplitError: the model does not trace (dynamic control flow, unsupported ops, ...).
    """
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    concrete = {
        p.name: p.default
        for p in params[1:]
        if p.default is not inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    try:
        gm = fx.symbolic_trace(model, concrete_args=concrete or None)
    except Exception as e:  # dynamic control flow, unsupported ops, ...
        raise SplitError(f"the model does not trace with torch.fx ({type(e).__name__}: {e})") from None
    _drop_specialised_inputs(gm)
    return gm


_TRACES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _traced(model: nn.Module, example: Tensor) -> tuple[fx.GraphModule, Tensor]:
    """:func:`trace_model` with every node's shape and dtype recorded (:class:`_ShapeRecorder`)
    on ``example``, and the model's output on it. Cached per model and example (and the
    version counters of its tensors, so an in-place change of the weights invalidates it):
    the jobs of one model in a process trace it once.

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
    gm = trace_model(model)
    try:
        with torch.no_grad():
            # a second run on one image more tells a batch dimension from a size that equals
            # the batch by chance (a sequence of 2 tokens at 2 images)
            _ShapeRecorder(gm, "tensor_meta_more").run(torch.cat([example, example[:1]]))
            probe = _ShapeRecorder(gm).run(example)
    except Exception as e:
        raise SplitError(f"the traced graph does not run on the example ({type(e).__name__}: {e})") from None
    _TRACES[model] = (gm, example.clone(), probe, versions)
    return gm, probe


def layer_names(model: nn.Module, layer: LayerInfo | str, bn: str | None = None) -> dict[str, str]:
    """role -> full parameter name for ``layer`` (a :class:`LayerInfo`, or the path of a
    module with ``weight`` and maybe ``bias``, followed by the BatchNorm ``bn``)."""
    if isinstance(layer, LayerInfo):
        return layer.param_names()
    mod = model.get_submodule(layer)
    names = {"weight": f"{layer}.weight"}
    if getattr(mod, "bias", None) is not None:
        names["bias"] = f"{layer}.bias"
    if bn is not None:
        names.update(bn_weight=f"{bn}.weight", bn_bias=f"{bn}.bias")
    return names


def _unit_node(nodes: list[fx.Node], path: str, names: dict[str, str]) -> tuple[fx.Node, bool]:
    """The node that computes the layer, and whether it is the layer's own module call
    (True) or a larger call that reads its weights (a host: an attention module, or a
    function taking the weights as arguments)."""
    owner = names["weight"].rpartition(".")[0]
    calls = [n for n in nodes if n.op == "call_module" and n.target == path]
    if owner == path and calls:
        if len(calls) != 1:
            raise SplitError(f"layer {path} is called {len(calls)} times in the graph, expected once")
        return calls[0], True
    weights = {names[r] for r in ("weight", "bias") if r in names}
    attrs = [n for n in nodes if n.op == "get_attr" and n.target in weights]
    if attrs:
        users = {u for a in attrs for u in a.users}
        if len(users) != 1:
            raise SplitError(f"the weights of layer {path} are read by {len(users)} calls in the graph, expected one")
        return users.pop(), False
    hosts = [n for n in nodes if n.op == "call_module" and names["weight"].startswith(f"{n.target}.")]
    if not hosts:
        raise SplitError(f"layer {path}: no call in the graph computes it (its module is not called, nothing reads its weight)")
    target = max((n.target for n in hosts), key=len)
    hosts = [n for n in hosts if n.target == target]
    if len(hosts) != 1:
        raise SplitError(f"{target}, which computes layer {path}, is called {len(hosts)} times in the graph, expected once")
    return hosts[0], False


def split_at_layer(model: nn.Module, layer: LayerInfo | str, example: Tensor, *, bn: str | None = None) -> LayerSplit:
    """Cut ``model``'s ``torch.fx`` graph at ``layer`` into prefix, replicated unit and suffix.

    The unit is the layer's own call (a Conv1d/2d/3d or Linear module, with the BatchNorm
    fed only by it: ``layer.bn``) or, when the layer is computed inside a larger call, that
    call (a *host*: ``nn.MultiheadAttention`` for its ``in_proj`` and ``out_proj``, or a
    function that takes the layer's weights as arguments, such as torchvision Swin's
    ``shifted_window_attention``), re-run per replica with the replica's tensors
    (:mod:`netperturb.perturb.engine.units`).

    The prefix computes every value that is live across the unit: its input and every tensor
    computed without its output that a later node reads (a ResNet block's skip input, the
    other branches of an Inception block). Values that depend on the input but are not
    batch tensors (``x.shape``, ``x.size(0)``) and constants (``get_attr``) are recomputed
    inside the suffix so that the suffix works on a K-fold batch.

    Args:
        model: in eval mode.
        layer: :class:`LayerInfo` (its ``bn`` is used) or a module path.
        example: a small input batch (b >= 1, ideally 2), used to find which values are
            tensors with a batch dimension and their sizes.
        bn: module path of the following BatchNorm when ``layer`` is a path.

    Raises:
        SplitError: the model does not trace; no call or more than one computes the layer;
            the unit reads more than one batch value; a live value has no batch dimension;
            or the model does not return one tensor.
    """
    path = layer.path if isinstance(layer, LayerInfo) else layer
    bn_path = layer.bn if isinstance(layer, LayerInfo) else bn
    names = layer_names(model, layer, bn)
    gm, probe = _traced(model, example)
    graph = gm.graph
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise SplitError(f"the model takes {len(placeholders)} inputs without defaults, expected 1")
    L, own = _unit_node(nodes, path, names)
    batch = int(example.shape[0])

    def is_batch(n: fx.Node) -> bool:
        meta, more = n.meta.get("tensor_meta"), n.meta.get("tensor_meta_more")
        return (
            _is_tensor_node(n)
            and isinstance(meta, _TensorMeta)
            and isinstance(more, _TensorMeta)
            and len(meta.shape) > 0
            and (meta.shape[0], more.shape[0]) == (batch, batch + 1)
        )

    depends: set[fx.Node] = set()  # nodes that read the input images
    for n in nodes:
        if n.op == "placeholder" or any(a in depends for a in n.all_input_nodes):
            depends.add(n)
    inputs = list(dict.fromkeys(a for a in L.all_input_nodes if a in depends and is_batch(a)))
    if own and (len(L.args) != 1 or L.kwargs or not isinstance(L.args[0], fx.Node)):
        raise SplitError(f"layer {path} is not called with one tensor input")
    if len(inputs) != 1:
        raise SplitError(f"layer {path}: the call that computes it reads {len(inputs)} batch values, expected 1")
    layer_in = inputs[0]
    unit = [L]
    bn_mod = None
    if bn_path is not None and own:
        users = list(L.users)
        if len(users) != 1 or users[0].op != "call_module" or users[0].target != bn_path:
            raise SplitError(f"layer {path}: BatchNorm {bn_path} is not its only user in the graph")
        unit.append(users[0])
        bn_mod = model.get_submodule(bn_path)
        if not isinstance(bn_mod, _BN_TYPES):
            raise SplitError(f"{bn_path} is not a BatchNorm")
    out_node = nodes[-1]
    if out_node.op != "output" or not (isinstance(out_node.args[0], fx.Node) and _is_tensor_node(out_node.args[0])):
        raise SplitError("the model does not return one tensor of logits")

    dirty: set[fx.Node] = set()  # nodes that read the unit's output, directly or not
    for n in nodes:
        if n is L or any(a in dirty for a in n.all_input_nodes):
            dirty.add(n)
    unit_set = set(unit)
    suffix_set = dirty - unit_set

    live: list[fx.Node] = []

    def need(u: fx.Node) -> None:
        if u in suffix_set or u in unit_set or u in live:
            return
        if u in depends and _is_tensor_node(u):
            if not is_batch(u):
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
    suffix_live_nodes = list(live)
    if layer_in not in live:
        live.append(layer_in)

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

    # the unit's own graph when it is not a standard Conv / Linear call
    host, host_names = None, {}
    module = model.get_submodule(names["weight"].rpartition(".")[0])
    if not own or not standard_forward(module):
        host, host_names = _unit_graph(gm, L, layer_in, depends, is_batch), names

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
    named = dict(model.named_parameters())
    tensors = {role: named[n] for role, n in names.items() if n in named}
    split = LayerSplit(
        prefix=prefix,
        suffix=suffix,
        module=module,
        bn=bn_mod,
        unit_input=live.index(layer_in),
        suffix_live=[live.index(v) for v in suffix_live_nodes],
        live_bytes=sum(size[v] for v in live),
        suffix_peak_bytes=peak,
        unit_out_bytes=size[unit[-1]],
        names={r: n for r, n in host_names.items() if r in ("weight", "bias")},
        host=host,
        how="graph",
        tensors=tensors,
    )
    split.roles = tuple(tensors)
    split.probe_logits = probe
    return split


def _unit_graph(gm: fx.GraphModule, L: fx.Node, layer_in: fx.Node, depends: set, is_batch) -> fx.GraphModule:
    """A graph module ``unit(x) -> L's value`` with ``layer_in`` as its input, recomputing the
    other arguments of ``L`` (weights, position-bias tables, shapes) from constants.

    Raises:
        SplitError: an argument of ``L`` depends on another batch value.
    """
    ug = fx.Graph()
    env: dict[fx.Node, fx.Node] = {layer_in: ug.placeholder("unit_in")}

    def copy(n: fx.Node) -> fx.Node:
        if n in env:
            return env[n]
        if n is not L and (n.op == "placeholder" or (n in depends and is_batch(n))):
            raise SplitError(f"the call that computes the layer also reads {n.name}, another batch value")
        for a in n.all_input_nodes:
            copy(a)
        env[n] = ug.node_copy(n, lambda a: env[a])
        return env[n]

    ug.output(copy(L))
    return fx.GraphModule(gm, ug)


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
