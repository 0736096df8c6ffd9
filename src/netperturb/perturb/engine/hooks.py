"""The hook path: clean-prefix reuse and batched replicas for a model ``torch.fx`` cannot trace.

A network with data-dependent control flow (``if x.abs().max() > t``), calls torch.fx cannot
follow, or a ``forward`` that is not a graph of module calls cannot be cut by
:func:`netperturb.perturb.engine.graph.split_at_layer`. The hook path makes the same
:class:`~netperturb.perturb.engine.units.LayerSplit` from the module calls the network
makes, seen through forward hooks and by replacing modules' ``forward`` for the duration
of one call of the model (the model is never copied or changed; everything is restored):

*probe* (once per job, on 2 images and on 1)
    Records every module call: which module, its n-th call, its caller, its output. The
    *host* is the call that computes the layer: the layer's own module, or the nearest
    enclosing module that is called (``nn.MultiheadAttention`` for ``in_proj`` / ``out_proj``,
    Swin's attention block for ``qkv``). It must be called once per forward, on one batch
    tensor. The calls that finish before the host starts and are not its callers are the
    *prefix calls*; the outermost of them whose output is one tensor with the batch on dim 0
    (checked at 2 and at 1 image) are cached.
*prefix* (once per batch of images)
    Runs the model until the host is called, keeping the host's input (the clean input of
    the perturbed layer) and a copy of each cached call's output, then stops the forward
    pass (an exception raised inside the host's replaced ``forward``).
*unit*
    The K replicas of the layer on that input, each on its own
    (:meth:`~netperturb.perturb.engine.units.LayerSplit.unit`).
*suffix* (once per group of K replicas)
    Runs the model on the K-fold batch (the images repeated K times): each cached call
    returns its cached output repeated K times instead of computing, the host returns the
    K replicas' outputs, and every call after it runs on the K * B rows. The layer's
    BatchNorm, if it has one, applies each replica's own affine terms to its rows.

So the part of the network before the layer costs one pass per batch (the prefix) plus the
operations between cached calls, and the replicas share one pass of the rest. The numbers
equal the naive loop's bit for bit when the network treats the images of a batch
independently and its control flow takes the same branches on the images repeated K times
(a decision on a whole batch, ``if x.max() > t``, sees the K replicas' values together
after the layer). A batch whose calls differ from the probe's recomputes the calls it did
not cache (a marker in place of the cached value), so the result does not depend on it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netperturb.core.layers import LayerInfo
from netperturb.perturb.engine.graph import SplitError, layer_names, split_at_layer
from netperturb.perturb.engine.units import LayerSplit, cat_replicas, replica_slice, slice_replicas, standard_forward

__all__ = ["HookError", "HookSplit", "split_by_hooks", "find_split", "SPLIT_PATHS", "output_module", "check_output_hook"]

#: Values of ``path`` for :func:`find_split`: ``auto`` tries the graph split, then the hooks.
SPLIT_PATHS = ("auto", "graph", "hooks")

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class HookError(RuntimeError):
    """The hook path cannot run the model at this layer (the engine falls back)."""


class _Stop(Exception):
    """Raised inside the host's forward to end a prefix pass."""


@dataclass
class _Call:
    module: nn.Module
    idx: int  # the module's n-th call in this forward
    parent: "_Call | None"
    output: object = None
    done: bool = False
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def _record(model: nn.Module, x: Tensor) -> tuple[list[_Call], object]:
    """Run ``model(x)`` with hooks on every module: (every call in start order, the model's
    output)."""
    calls: list[_Call] = []
    stack: list[_Call] = []
    counts: dict[int, int] = {}

    def pre(m, args, kwargs):
        c = _Call(m, counts.get(id(m), 0), stack[-1] if stack else None, args=args, kwargs=kwargs)
        counts[id(m)] = c.idx + 1
        calls.append(c)
        stack.append(c)

    def post(m, args, output):
        c = stack.pop()
        c.output, c.done = output, True

    handles = []
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post))
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return calls, out


def _is_batch(v, b: int) -> bool:
    return isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == b


def _bytes(v) -> int:
    if isinstance(v, Tensor):
        return v.numel() * v.element_size()
    if isinstance(v, (tuple, list)):
        return sum(_bytes(t) for t in v)
    return 0


def _host_of(model: nn.Module, layer: LayerInfo | str, names: Mapping[str, str], called: set[int]) -> tuple[str, nn.Module]:
    """(path, module) of the call that computes the layer: its own module when that is
    called, else the nearest enclosing module that is."""
    path = names["weight"].rpartition(".")[0]
    while True:
        mod = model.get_submodule(path)
        if id(mod) in called:
            return path, mod
        if not path:
            raise HookError(f"layer {getattr(layer, 'path', layer)}: no module that holds it is called in the forward pass")
        path = path.rpartition(".")[0]


class _HostCall(nn.Module):
    """``host(*args, **kwargs)`` with the batch tensor at the recorded positions: the unit of a
    host whose call takes more than its input (``attention(x, x, x, need_weights=False)``)."""

    def __init__(self, host: nn.Module, args: tuple, kwargs: dict, x_args: list[int], x_kwargs: list[str]):
        super().__init__()
        self.h = host
        self._args, self._kwargs, self._xa, self._xk = args, kwargs, x_args, x_kwargs

    def forward(self, x):
        args = tuple(x if i in self._xa else a for i, a in enumerate(self._args))
        kwargs = {k: (x if k in self._xk else v) for k, v in self._kwargs.items()}
        return self.h(*args, **kwargs)


@contextmanager
def _forwards(replace: Mapping[nn.Module, Callable]):
    """Give modules another ``forward`` (an instance attribute) and restore them on exit."""
    missing = object()
    saved = {}
    try:
        for m, make in replace.items():
            saved[m] = vars(m).get("forward", missing)
            m.forward = make(m.forward)
        yield
    finally:
        for m, old in saved.items():
            if old is missing:
                del m.forward
            else:
                m.forward = old


def _sentinel(b: int, device) -> Tensor:
    """The marker put in place of a cached output a batch did not produce: (b, 0) bool."""
    return torch.empty((b, 0), dtype=torch.bool, device=device)


def _is_sentinel(v) -> bool:
    return isinstance(v, Tensor) and v.dtype == torch.bool and v.ndim == 2 and v.shape[1] == 0


@dataclass
class HookSplit(LayerSplit):
    """A :class:`~netperturb.perturb.engine.units.LayerSplit` made by :func:`split_by_hooks`.
    Live values: ``(images, host input, *cached call outputs)``."""

    model: nn.Module | None = field(default=None, repr=False)
    host_module: nn.Module | None = field(default=None, repr=False)
    slots: list[tuple[nn.Module, int]] = field(default_factory=list, repr=False)
    bn_module: nn.Module | None = field(default=None, repr=False)
    #: the module calls after the layer's host that have no child modules, with their output
    #: shapes at the 2-image example (the cost model's view of the suffix)
    suffix_calls: list[tuple[nn.Module, tuple[int, ...]]] = field(default_factory=list, repr=False)
    _affine: list = field(default_factory=list, repr=False)  # per replica of the last unit call: (bn weight, bn bias)
    _active: list = field(default_factory=list, repr=False)  # those the suffix call now running applies

    @property
    def channel_dim(self) -> int | None:
        # with a BatchNorm applied in the suffix, zeroing channels of the layer's clean
        # output would not make a knocked-out node 0 after it
        return None if self.bn_module is not None else super().channel_dim

    def unit(self, x: Tensor, wide: Mapping[str, Tensor], k: int):
        """:meth:`~netperturb.perturb.engine.units.LayerSplit.unit`; keeps the replicas' BatchNorm affine terms for the suffix."""
        if self.bn_module is not None:
            self._affine = [
                (replica_slice(wide["bn_weight"], r, k), replica_slice(wide["bn_bias"], r, k)) if "bn_weight" in wide
                else (self.bn_module.weight, self.bn_module.bias)
                for r in range(k)
            ]  # fmt: skip
        return super().unit(x, {r: t for r, t in wide.items() if not r.startswith("bn_")}, k)

    def run_suffix(self, u, live, k: int, *, exact: bool) -> Tensor:
        """:meth:`~netperturb.perturb.engine.units.LayerSplit.run_suffix`; the BatchNorm applies the affine terms of the
        replicas the suffix call computes."""
        if not exact or k == 1:
            self._active = self._affine
            return super().run_suffix(u, live, k, exact=exact)
        # one set of affine terms for k replicas: the unit ran once on the clean tensors and the
        # caller made the k outputs (the sparse path), so all k share the clean BatchNorm
        affine = self._affine * k if len(self._affine) == 1 else self._affine
        outs = []
        for r in range(k):
            self._active = affine[r : r + 1] if affine else []
            outs.append(super().run_suffix(slice_replicas(u, r, k), live, 1, exact=exact))
        return torch.cat(outs)

    def forward(self, x: Tensor) -> Tensor:
        self._active = []
        live = self.prefix(x)
        u = self.unit(live[self.unit_input], self.clean_tensors(), 1)
        self._active = self._affine
        return self.suffix(u, *[live[i] for i in self.suffix_live])

    def _prefix(self, x: Tensor) -> tuple:
        b = int(x.shape[0])
        got: dict[tuple[int, int], Tensor] = {}
        counts: dict[int, int] = {}
        wanted = {(id(m), i) for m, i in self.slots}
        captured: dict = {}

        def cache(m):
            def make(orig):
                def fwd(*args, **kwargs):
                    i = counts.get(id(m), 0)
                    counts[id(m)] = i + 1
                    out = orig(*args, **kwargs)
                    if (id(m), i) in wanted and _is_batch(out, b):
                        got[(id(m), i)] = out.clone()
                    return out

                return fwd

            return make

        def stop(orig):
            def fwd(*args, **kwargs):
                captured["x"] = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)][0]
                raise _Stop

            return fwd

        replace = {m: cache(m) for m, _ in self.slots if m is not self.host_module}
        replace[self.host_module] = stop
        try:
            with _forwards(replace):
                self.model(x)
        except _Stop:
            pass
        if "x" not in captured:
            raise HookError("the layer was not called for this batch of images")
        values = [got.get((id(m), i), _sentinel(b, x.device)) for m, i in self.slots]
        return (x, captured["x"], *values)

    def _suffix(self, u, x: Tensor, *values) -> Tensor:
        counts: dict[int, int] = {}
        slot = {(id(m), i): j for j, (m, i) in enumerate(self.slots)}

        def cached(m):
            def make(orig):
                def fwd(*args, **kwargs):
                    i = counts.get(id(m), 0)
                    counts[id(m)] = i + 1
                    j = slot.get((id(m), i))
                    if j is not None and not _is_sentinel(values[j]):
                        return values[j]
                    return orig(*args, **kwargs)

                return fwd

            return make

        def host(orig):
            done = []

            def fwd(*args, **kwargs):
                if done:
                    return orig(*args, **kwargs)
                done.append(1)
                return u

            return fwd

        def bn(orig):
            m, affine = self.bn_module, self._active

            def fwd(y):
                k = len(affine)
                use_batch_stats = m.training or (m.running_mean is None and m.running_var is None)
                outs = [
                    F.batch_norm(replica_slice(y, r, k), m.running_mean, m.running_var, w, b_, use_batch_stats, 0.0, m.eps)
                    for r, (w, b_) in enumerate(affine)
                ]  # fmt: skip
                return cat_replicas(outs)

            return fwd

        replace = {m: cached(m) for m, _ in self.slots if m is not self.host_module}
        replace[self.host_module] = host
        if self.bn_module is not None:
            replace[self.bn_module] = bn
        with _forwards(replace):
            return self.model(x)


def split_by_hooks(model: nn.Module, layer: LayerInfo | str, example: Tensor, *, bn: str | None = None) -> HookSplit:
    """The hook path's split of ``model`` at ``layer`` (module docstring).

    Args:
        model: in eval mode; any ``nn.Module`` whose ``forward(x)`` returns a tensor of
            logits (B, classes).
        layer: a :class:`~netperturb.core.layers.LayerInfo` or a module path (``bn``: its
            BatchNorm follower).
        example: a small preprocessed batch (1 or more images; 2 are used).

    Raises:
        HookError: the host is not called exactly once per forward, or on more than one batch
            tensor or on a tensor argument without a batch dimension, its output or the
            model's has no batch dimension, the BatchNorm runs before the layer, or a module
            cannot take another ``forward`` (a TorchScript module).
    """
    path = layer.path if isinstance(layer, LayerInfo) else layer
    bn_path = layer.bn if isinstance(layer, LayerInfo) else bn
    names = layer_names(model, layer, bn)
    if isinstance(model, torch.jit.ScriptModule):
        raise HookError("a TorchScript module's forward cannot be replaced")
    ex2 = example[:2] if example.shape[0] >= 2 else example.repeat(2, *([1] * (example.ndim - 1)))
    with torch.no_grad():
        calls, logits = _record(model, ex2)
        calls1, logits1 = _record(model, ex2[:1])
    host_path, host = _host_of(model, layer, names, {id(c.module) for c in calls})
    hosts = [c for c in calls if c.module is host]
    if len(hosts) != 1:
        raise HookError(f"{host_path or 'the model'}, which computes layer {path}, is called {len(hosts)} times per forward, expected once")
    hcall = hosts[0]
    hstack, c = [], hcall.parent
    while c is not None:
        hstack.append(c)
        c = c.parent
    if not (_is_batch(logits, 2) and _is_batch(logits1, 1)):
        raise HookError("the model does not return one tensor of logits with the batch on dim 0")
    tensors = [(i, a) for i, a in enumerate(hcall.args) if isinstance(a, Tensor)]
    ktensors = [(k, v) for k, v in hcall.kwargs.items() if isinstance(v, Tensor)]
    distinct = {id(a) for _, a in tensors + ktensors}
    if len(distinct) != 1:
        raise HookError(f"{host_path}, which computes layer {path}, takes {len(distinct)} tensors, expected one batch tensor")
    hosts1 = [c for c in calls1 if c.module is host]

    def first(v):  # the tensor of an output, or the first of a tuple (an attention returns (out, weights))
        return v if isinstance(v, Tensor) else (v or [None])[0]

    def batch_input(c: _Call) -> Tensor:
        return [a for a in (*c.args, *c.kwargs.values()) if isinstance(a, Tensor)][0]

    if len(hosts1) != 1 or not (_is_batch(batch_input(hcall), 2) and _is_batch(batch_input(hosts1[0]), 1)):
        raise HookError(f"the input of {host_path} has no batch dimension on dim 0 (checked at 2 images and at 1)")
    if not (_is_batch(first(hcall.output), 2) and _is_batch(first(hosts1[0].output), 1)):
        raise HookError(f"the output of {host_path} has no batch dimension on dim 0 (checked at 2 images and at 1)")

    # cached calls: outermost calls finished before the host started, not its callers
    on_stack = {id(c) for c in hstack}
    start = calls.index(hcall)
    key1 = {(id(c.module), c.idx): c for c in calls1}
    slots: list[tuple[nn.Module, int]] = []
    live_bytes = ex2.element_size() * ex2[0].numel()
    todo = [c for c in calls[:start] if id(c) not in on_stack and c.parent is not None and id(c.parent) in on_stack]
    while todo:
        c = todo.pop(0)
        c1 = key1.get((id(c.module), c.idx))
        if _is_batch(c.output, 2) and c1 is not None and _is_batch(c1.output, 1):
            slots.append((c.module, c.idx))
            live_bytes += _bytes(c.output) // 2
        else:
            todo.extend(d for d in calls[:start] if d.parent is c)
    bn_mod = None
    if bn_path is not None:
        bn_mod = model.get_submodule(bn_path)
        bn_calls = [i for i, c in enumerate(calls) if c.module is bn_mod]
        if not isinstance(bn_mod, _BN_TYPES) or len(bn_calls) != 1 or bn_calls[0] < start:
            raise HookError(f"BatchNorm {bn_path} is not called once after layer {path}")
    own = host_path == names["weight"].rpartition(".")[0] and standard_forward(host)
    host_unit, host_names = None, {}
    if not own:
        xa = [i for i, _ in tensors]
        xk = [k for k, _ in ktensors]
        args = tuple(None if i in xa else a for i, a in enumerate(hcall.args))
        kwargs = {k: (None if k in xk else v) for k, v in hcall.kwargs.items()}
        host_unit = _HostCall(host, args, kwargs, xa, xk)
        prefix = f"{host_path}." if host_path else ""
        host_names = {r: "h." + n[len(prefix):] for r, n in names.items() if r in ("weight", "bias")}
    named = dict(model.named_parameters())
    after = calls[start + 1 :]
    leaf_calls = [
        (c.module, tuple(first(c.output).shape)) for c in after
        if next(c.module.children(), None) is None and isinstance(first(c.output), Tensor)
    ]  # fmt: skip
    split = HookSplit(
        prefix=None,
        suffix=None,
        module=model.get_submodule(names["weight"].rpartition(".")[0]),
        bn=None,
        unit_input=1,
        suffix_live=[0, *range(2, 2 + len(slots))],
        live_bytes=live_bytes + _bytes((tensors + ktensors)[0][1]) // 2,
        suffix_peak_bytes=sum(_bytes(c.output) for c in after) // 2 + _bytes(hcall.output) // 2,
        unit_out_bytes=_bytes(hcall.output) // 2,
        names=host_names,
        host=host_unit,
        how="hooks",
        tensors={role: named[n] for role, n in names.items() if n in named},
        model=model,
        host_module=host,
        slots=slots,
        bn_module=bn_mod,
        suffix_calls=leaf_calls,
    )
    split.prefix, split.suffix = split._prefix, split._suffix
    split.roles = tuple(split.tensors)
    if example.shape[0] == 2:
        split.probe_logits = logits
    else:
        with torch.no_grad():
            split.probe_logits = model(example)
    return split


def find_split(model: nn.Module, layer: LayerInfo, example: Tensor, *, path: str = "auto",
               own_output: bool = False) -> tuple[LayerSplit | None, str]:  # fmt: skip
    """The split the fast engine uses for ``layer``: the torch.fx graph split, else the hook
    path, each kept only if prefix + unit + suffix reproduces the model's output on
    ``example`` (fp32, relative 1e-4).

    Args:
        path: ``"auto"`` (graph, then hooks), ``"graph"`` or ``"hooks"`` (only that one).
        own_output: the unit's output must be the layer's own output (activation faults act
            on it): a host unit, or a hook split with a BatchNorm after the layer, is refused.

    Returns:
        (the split or None, why each refused path was refused: ``"graph split: ...; hook
        path: ..."``).

    Raises:
        ValueError: unknown ``path``.
    """
    if path not in SPLIT_PATHS:
        raise ValueError(f"path {path!r} unknown; known: {', '.join(SPLIT_PATHS)}")
    reasons = []
    tried = {"auto": ("graph", "hooks"), "graph": ("graph",), "hooks": ("hooks",)}[path]
    for key, how, make, error in (("graph", "graph split", split_at_layer, SplitError),
                                  ("hooks", "hook path", split_by_hooks, HookError)):  # fmt: skip
        if key not in tried:
            continue
        try:
            split = make(model, layer, example)
        except error as e:
            reasons.append(f"{how}: {e}")
            continue
        if own_output and (split.host is not None or getattr(split, "bn_module", None) is not None):
            reasons.append(f"{how}: the unit's output is not the layer's own output")
            continue
        ref, got = split.probe_logits, split.forward(example)
        if ref.shape != got.shape or not torch.allclose(ref, got, rtol=1e-4, atol=1e-5 * float(ref.abs().max()) + 1e-6):
            reasons.append(f"{how}: prefix + unit + suffix differs from the full forward pass")
            continue
        return split, "; ".join(reasons)
    return None, "; ".join(reasons)


def output_module(model: nn.Module, layer: LayerInfo) -> nn.Module:
    """The module whose output is the layer's output (what an activation fault acts on): the
    BatchNorm that follows the layer, else the layer's own module.

    Raises:
        ValueError: the layer has no output of its own (the input projection of an
            ``nn.MultiheadAttention`` is computed inside the attention's forward).
    """
    if layer.kind == "in_proj":
        raise ValueError(
            f"layer {layer.path}: activation faults act on a layer's output, and the input projection of a "
            f"MultiheadAttention has none of its own (q, k and v are computed inside {layer.module_path}'s forward); "
            f"perturb its weights, or choose a layer whose module is called (e.g. a Linear of the MLP)"
        )
    return model.get_submodule(layer.bn or layer.path)


def check_output_hook(layer: LayerInfo, calls: int) -> None:
    """After a forward pass with an activation-fault hook on :func:`output_module`: the hook
    must have run.

    Raises:
        ValueError: it never ran: the layer's module is never called (its weights are read
            by an enclosing module, as ``out_proj`` by ``nn.MultiheadAttention`` or ``qkv`` by
            torchvision Swin's attention), so the fault would silently change nothing.
    """
    if calls == 0:
        raise ValueError(
            f"layer {layer.path}: its module is never called in the forward pass (an enclosing module reads its "
            f"weights directly, e.g. {layer.path.rpartition('.')[0] or 'the model'}), so an activation fault on its "
            f"output cannot be applied; perturb its weights, or choose a layer whose module is called"
        )
