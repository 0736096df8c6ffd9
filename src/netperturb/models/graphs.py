"""A model given as a graph (a ``torch.export`` program, a converted TorchScript file) turned
into a plain ``torch.fx.GraphModule`` whose layers are real ``nn.Conv*d`` / ``nn.Linear`` /
``nn.BatchNorm*d`` modules at their original module paths.

``torch.export.load(f).module()`` returns a graph that calls ``aten.conv2d(x, w, b, ...)``
on parameters registered under the original names (``features.0.weight``) but holds no
``Conv2d`` module: :func:`netperturb.core.layers.find_layers` would find no layer, and the
engines that swap a layer's tensors or split the graph at a layer would not see it.
:func:`modularise` replaces each such call by a call of a module of the right type, built
with the call's hyper-parameters (stride, padding, dilation, groups; a BatchNorm's eps) and
holding the same tensors, at the path the parameters had. The numbers are those of the
aten call (``nn.Conv2d.forward`` calls the same ``conv2d``); the tests check it bit for bit.

Supported calls (what ``torch.export`` writes by default and after ``run_decompositions``):
``aten.conv1d/conv2d/conv3d`` (``.default`` and ``.padding``), ``aten.convolution``
(not transposed), ``aten.linear``, ``aten.batch_norm`` and
``aten._native_batch_norm_legit_no_training`` (inference). A call whose weight is shared
with another call (tied weights), or whose parameters' owner holds anything else, is left as
it is (its layer is then not perturbable; ``netperturb layers`` shows what is).
"""

from __future__ import annotations

import logging
import operator
from typing import Sequence

import torch
from torch import Tensor, fx, nn

__all__ = ["modularise", "drop_guards", "GraphModelError"]

log = logging.getLogger("netperturb")


class GraphModelError(ValueError):
    """A graph model that netperturb cannot evaluate (several inputs, no tensor output)."""


def _ops(*names: str) -> set:
    out = set()
    for name in names:
        packet, _, overload = name.partition(".")
        op = getattr(torch.ops.aten, packet, None)
        if op is not None and hasattr(op, overload or "default"):
            out.add(getattr(op, overload or "default"))
    return out


_CONV = {1: _ops("conv1d.default", "conv1d.padding"), 2: _ops("conv2d.default", "conv2d.padding"),
         3: _ops("conv3d.default", "conv3d.padding")}  # fmt: skip
_CONVOLUTION = _ops("convolution.default")
_LINEAR = _ops("linear.default")
_BATCH_NORM = _ops("batch_norm.default")
_BATCH_NORM_TUPLE = _ops("_native_batch_norm_legit_no_training.default")
_CONV_TYPES = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN_TYPES = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def _arg(node: fx.Node, i: int, name: str, default):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _fetch(root: nn.Module, target: str):
    owner, _, name = target.rpartition(".")
    return getattr(root.get_submodule(owner) if owner else root, name)


def _tensor_attr(root: nn.Module, node) -> Tensor | None:
    """The tensor a ``get_attr`` node reads, or None (not a get_attr node / not a tensor)."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value = _fetch(root, node.target)
    return value if isinstance(value, Tensor) else None


def _owner(nodes: list[fx.Node | None]) -> str | None:
    """The common module path of the get_attr nodes (their targets' prefix), or None."""
    owners = {n.target.rpartition(".")[0] for n in nodes if n is not None}
    if len(owners) != 1:
        return None
    (owner,) = owners
    return owner or None


def _only_these(root: nn.Module, owner: str, names: set[str]) -> bool:
    """True when the module at ``owner`` has no children and no tensors besides ``names``."""
    try:
        mod = root.get_submodule(owner)
    except AttributeError:
        return False
    if any(True for _ in mod.children()):
        return False
    own = {n for n, _ in mod.named_parameters(recurse=False)} | {n for n, _ in mod.named_buffers(recurse=False)}
    own |= {k for k, v in vars(mod).items() if isinstance(v, Tensor)}
    return own <= names


def _private(nodes: list[fx.Node | None], user: fx.Node) -> bool:
    return all(n is None or set(n.users) == {user} for n in nodes)


def _as_param(t: Tensor) -> nn.Parameter:
    return t if isinstance(t, nn.Parameter) else nn.Parameter(t.detach(), requires_grad=False)


def _conv_module(root, node: fx.Node, dims: int, transposed_ok: bool = True):
    x, w_node, b_node = node.args[0], node.args[1], _arg(node, 2, "bias", None)
    w, b = _tensor_attr(root, w_node), _tensor_attr(root, b_node)
    if w is None or (b_node is not None and b is None):
        return None
    if node.target in _CONVOLUTION:
        stride, padding, dilation, transposed, _out_pad, groups = (node.args + (None,) * 9)[3:9]
        if transposed:
            return None
    else:
        stride = _arg(node, 3, "stride", [1] * dims)
        padding = _arg(node, 4, "padding", [0] * dims)
        dilation = _arg(node, 5, "dilation", [1] * dims)
        groups = _arg(node, 6, "groups", 1)
    groups = int(groups or 1)
    mod = _CONV_TYPES[dims](
        w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(stride), padding=padding if isinstance(padding, str) else tuple(padding),
        dilation=tuple(dilation), groups=groups, bias=b is not None, device="meta",
    )  # fmt: skip
    mod.weight = _as_param(w)
    mod.bias = _as_param(b) if b is not None else None
    return mod, [x], [w_node, b_node], {"weight", "bias"}


def _linear_module(root, node: fx.Node):
    x, w_node, b_node = node.args[0], node.args[1], _arg(node, 2, "bias", None)
    w, b = _tensor_attr(root, w_node), _tensor_attr(root, b_node)
    if w is None or w.ndim != 2 or (b_node is not None and b is None):
        return None
    mod = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device="meta")
    mod.weight = _as_param(w)
    mod.bias = _as_param(b) if b is not None else None
    return mod, [x], [w_node, b_node], {"weight", "bias"}


def _bn_module(root, node: fx.Node):
    x = node.args[0]
    if node.target in _BATCH_NORM:
        w_node, b_node, m_node, v_node = (node.args + (None,) * 5)[1:5]
        training, eps = _arg(node, 5, "training", False), _arg(node, 7, "eps", 1e-5)
    else:  # _native_batch_norm_legit_no_training(input, weight, bias, running_mean, running_var, momentum, eps)
        w_node, b_node, m_node, v_node = node.args[1:5]
        training, eps = False, _arg(node, 6, "eps", 1e-5)
    val = x.meta.get("val") if isinstance(x, fx.Node) else None
    tensors = [_tensor_attr(root, n) for n in (w_node, b_node, m_node, v_node)]
    if training or val is None or val.ndim not in _BN_TYPES or any(t is None for t in tensors[2:]):
        return None
    if (w_node is None) != (b_node is None) or (w_node is not None and None in tensors[:2]):
        return None
    w, b, mean, var = tensors
    mod = _BN_TYPES[val.ndim](mean.shape[0], eps=float(eps), affine=w is not None, device="meta").eval()
    if w is not None:
        mod.weight, mod.bias = _as_param(w), _as_param(b)
    mod.running_mean, mod.running_var = mean, var
    mod.num_batches_tracked = torch.zeros((), dtype=torch.long, device=mean.device)
    return mod, [x], [w_node, b_node, m_node, v_node], {"weight", "bias", "running_mean", "running_var",
                                                        "num_batches_tracked"}  # fmt: skip


def _layer_for(root, node: fx.Node):
    if node.op != "call_function":
        return None
    for dims, ops in _CONV.items():
        if node.target in ops:
            return _conv_module(root, node, dims)
    if node.target in _CONVOLUTION:
        w = _tensor_attr(root, node.args[1])
        return _conv_module(root, node, w.ndim - 2) if w is not None and w.ndim - 2 in _CONV_TYPES else None
    if node.target in _LINEAR:
        return _linear_module(root, node)
    if node.target in _BATCH_NORM | _BATCH_NORM_TUPLE:
        return _bn_module(root, node)
    return None


def drop_guards(graph: fx.Graph) -> None:
    """Remove the input-shape guard module call ``torch.export`` adds to ``.module()``."""
    for node in list(graph.nodes):
        if node.op == "call_module" and str(node.target).startswith("_guards"):
            graph.erase_node(node)


def _plain_io(graph: fx.Graph) -> None:
    """One tensor in, one tensor out, with fx's plain code generation (no pytree specs)."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise GraphModelError(f"the model takes {len(placeholders)} inputs; netperturb feeds one image batch")
    out = next(n for n in graph.nodes if n.op == "output")
    value = out.args[0]
    while isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, fx.Node):
        raise GraphModelError("the model does not return one tensor of logits")
    out.args = (value,)
    graph._codegen = fx.graph.CodeGen()


def modularise(gm: fx.GraphModule, order: Sequence[str] | None = None) -> fx.GraphModule:
    """A module of ``gm`` (an exported or converted graph) whose conv / linear / batch-norm calls
    on parameters are module calls (see the module docstring).

    Args:
        gm: e.g. ``torch.export.load(path).module()``; its nodes should carry ``meta["val"]``
            (export writes it) so that a batch norm's dimensionality is known.
        order: tensor names (``state_dict`` keys) in the original model's definition order;
            the submodules are put in that order (a converted TorchScript graph registers
            them in the order it met them), so the layers' depth order and labels are those
            of the original model.

    Returns:
        A plain ``torch.fx.GraphModule`` (``gm``'s graph is changed in place and reused) taking
        one input tensor and returning one tensor, its modules in ``gm``'s order (or
        ``order``), so the layers' depth order is the original model's; its tensors are
        ``gm``'s own objects (nothing is copied). Tensors the graph reads that are neither
        parameters nor buffers become buffers (so ``.to(device)`` moves them).

    Raises:
        GraphModelError: the graph takes more than one input or does not return one tensor.
    """
    original = list(gm.state_dict())
    graph = gm.graph
    drop_guards(graph)
    _plain_io(graph)
    made = 0
    for node in list(graph.nodes):
        found = _layer_for(gm, node)
        if found is None:
            continue
        mod, inputs, attr_nodes, names = found
        owner = _owner(attr_nodes)
        users = list(node.users)
        if node.target in _BATCH_NORM_TUPLE:
            if not users or any(u.target is not operator.getitem or u.args[1] != 0 for u in users):
                continue
        if owner is None or not _private(attr_nodes, node) or not _only_these(gm, owner, names):
            continue
        parent, _, child = owner.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, child, mod)
        with graph.inserting_before(node):
            call = graph.call_module(owner, tuple(inputs))
        call.meta = dict(node.meta)
        if node.target in _BATCH_NORM_TUPLE:
            for u in users:
                u.replace_all_uses_with(call)
                graph.erase_node(u)
        else:
            node.replace_all_uses_with(call)
        graph.erase_node(node)
        for a in attr_nodes:
            if a is not None and not a.users:
                graph.erase_node(a)
        made += 1
    _register_plain_tensors(gm, graph)
    graph.lint()
    out = fx.GraphModule(gm, graph)  # a plain GraphModule (export's own class refuses .eval())
    _reorder(out, {name: i for i, name in enumerate(order if order is not None else original)})
    log.info("graph model: %d conv / linear / batch-norm calls made modules", made)
    return out


def _register_plain_tensors(root: nn.Module, graph: fx.Graph) -> None:
    for node in graph.nodes:
        if node.op != "get_attr":
            continue
        owner_path, _, name = node.target.rpartition(".")
        owner = root.get_submodule(owner_path) if owner_path else root
        value = getattr(owner, name, None)
        if isinstance(value, Tensor) and name not in owner._parameters and name not in owner._buffers:
            delattr(owner, name)
            owner.register_buffer(name, value.detach())


def _reorder(root: nn.Module, rank: dict[str, int]) -> float:
    """Sort every module's children by the smallest rank of a tensor below them; returns
    the smallest rank below ``root``."""
    best = min((rank.get(n, float("inf")) for n, _ in root.named_parameters(recurse=False)), default=float("inf"))
    best = min([best, *(rank.get(n, float("inf")) for n, _ in root.named_buffers(recurse=False))])
    keys = {}
    for name, child in root.named_children():
        sub = {f"{k[len(name) + 1:]}": v for k, v in rank.items() if k.startswith(name + ".")}
        keys[name] = _reorder(child, sub)
        best = min(best, keys[name])
    ordered = sorted(root._modules.items(), key=lambda kv: keys.get(kv[0], float("inf")))
    root._modules.clear()
    root._modules.update(ordered)
    return best
