"""The replicated unit of the fast engine: the perturbed layer (and its BatchNorm), computed for K replicas.

A network cut at a layer (:func:`netperturb.perturb.engine.graph.split_at_layer`, or
:func:`netperturb.perturb.engine.hooks.split_by_hooks` for a model ``torch.fx`` cannot trace)
is a :class:`LayerSplit`: a *prefix* that computes, once per batch, the values still needed
after the layer; the *unit*, which computes the layer's output for K perturbed replicas of its
tensors; and a *suffix* that runs the rest of the network on the K-fold batch.

The unit is one of two shapes:

* a **direct** unit: the layer is a ``Conv1d`` / ``Conv2d`` / ``Conv3d`` / ``Linear`` module called
  on one tensor (and, in a graph split, the BatchNorm fed only by it);
* a **host** unit: the layer's weights are read by a larger call -- ``nn.MultiheadAttention``
  (its ``in_proj_weight`` and its ``out_proj``, whose ``forward`` the attention never calls),
  or a function that takes the weights as arguments (torchvision Swin's
  ``shifted_window_attention`` reads ``attn.qkv.weight`` and ``attn.proj.weight``). The unit
  then re-runs that call with the replica's tensors swapped in (``torch.func.functional_call``).

Either way each replica is computed on its own, with the same operation on the same shapes as
the naive reference runs it, so a replica's output equals the naive path's bit for bit. (One
layer widened to K replicas along its output dimension is the same arithmetic but a different
matrix-product shape, which the CPU kernels round differently: measured on torchvision
ResNet-18's ``fc`` with 10 outputs, 3 of 6 noise cells' loss sums differed in the last bits.
On the CPU a loop over replicas costs what the wide call costs: AlexNet fc6, 32 images, 8
replicas, one thread, 0.54 s against 0.56 s.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LayerSplit", "widen", "widen_roles", "replica_slice", "slice_replicas", "cat_replicas"]

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: module forwards the unit computes with ``F.conv*d`` / ``F.linear`` directly (any other
#: subclass of Conv/Linear is run through its own forward, ``functional_call``)
_STANDARD_FORWARDS = (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward, nn.Linear.forward)


def replica_slice(t: Tensor, r: int, k: int) -> Tensor:
    """Replica ``r``'s part of a tensor of ``k`` replicas concatenated along dim 0 (a view)."""
    if k == 1 or t.ndim == 0:
        return t
    rows = t.shape[0] // k
    return t[r * rows : (r + 1) * rows]


def slice_replicas(u, r: int, k: int):
    """Replica ``r``'s rows of a unit output of ``k`` replicas (tuples element-wise)."""
    if isinstance(u, Tensor):
        return replica_slice(u, r, k) if u.ndim else u
    if isinstance(u, (tuple, list)):
        return type(u)(slice_replicas(v, r, k) for v in u)
    return u


def cat_replicas(outs: Sequence):
    """Concatenate k per-replica outputs along the batch (dim 0), replica-major; tuples and
    lists element-wise (``nn.MultiheadAttention`` returns ``(output, weights or None)``).
    A non-tensor element (None, a shape) is taken from replica 0."""
    first = outs[0]
    if len(outs) == 1:
        return first
    if isinstance(first, Tensor):
        return torch.cat(list(outs))
    if isinstance(first, (tuple, list)):
        return type(first)(cat_replicas([o[i] for o in outs]) for i in range(len(first)))
    return first


def widen(tensors: Sequence[Tensor], groups: int = 1) -> Tensor:
    """Concatenate K replicas' tensors (each (out, ...)) along the output dimension.

    With ``groups`` > 1, output channels are arranged (group, replica, channel-in-group): the
    layout of one wide grouped convolution in which each replica's filters of group g still
    read the input channels of group g. The engine's units use ``groups = 1`` (each replica
    is computed on its own slice). Returns (K * out, ...).
    """
    if groups == 1 or tensors[0].ndim == 0:
        return torch.cat(list(tensors), 0) if len(tensors) > 1 else tensors[0]
    out = tensors[0].shape[0]
    rest = tensors[0].shape[1:]
    stacked = torch.stack([t.reshape(groups, out // groups, *rest) for t in tensors], dim=1)
    return stacked.reshape(len(tensors) * out, *rest)


@dataclass
class LayerSplit:
    """A network cut at one layer (built by ``split_at_layer`` or ``split_by_hooks``).

    Attributes:
        prefix: ``prefix(x) -> tuple`` of the live values (tensors (B, ...)) for input
            ``x`` (B, C, ...) (the preprocessed images).
        suffix: ``suffix(unit_out, *values) -> logits`` (B', classes), where ``unit_out``
            is the output of the unit and ``values`` are ``live[i]`` for ``i`` in
            ``suffix_live`` (each repeated K times along the batch for K replicas).
        module: the module that holds the perturbed layer's weight (the Conv / Linear, or
            the attention module of an ``in_proj`` layer).
        bn: the BatchNorm that is fed only by the layer, computed inside the unit; or None.
        unit_input: index of the unit's input among the live values.
        suffix_live: indices of the live values the suffix reads.
        live_bytes: bytes per image of the live values (fp32 probe).
        suffix_peak_bytes: estimated peak bytes per image of the suffix's activations.
        unit_out_bytes: bytes per image of the unit's output (one replica).
        roles: the roles of :meth:`clean_tensors`.
        probe_logits: the full model's output on the example the split was made on.
        names: role -> the name of the role's parameter in ``host``.
        host: for a host unit, the module run per replica by ``functional_call`` with
            ``names`` -> the replica's tensors on the unit input (a graph module of the call
            that reads the weights, or the layer's own module when its ``forward`` is not
            torch's); None for a direct unit.
        how: ``"graph"`` (torch.fx split) or ``"hooks"``.
        tensors: role -> the model's own tensor (:meth:`clean_tensors`).
    """

    prefix: object
    suffix: object
    module: nn.Module
    bn: nn.Module | None
    unit_input: int
    suffix_live: list[int]
    live_bytes: int = 0
    suffix_peak_bytes: int = 0
    unit_out_bytes: int = 0
    roles: tuple[str, ...] = field(default=())
    probe_logits: Tensor | None = field(default=None, repr=False)  # the full model's output on the example
    names: dict[str, str] = field(default_factory=dict)
    host: nn.Module | None = field(default=None, repr=False)
    how: str = "graph"
    tensors: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def groups(self) -> int:
        """Layout of the wide tensors the unit takes (:func:`widen`): 1, replicas one after
        the other along the output dimension (each replica is computed on its own slice)."""
        return 1

    @property
    def channel_dim(self) -> int | None:
        """Dimension of the unit output that indexes the layer's output units (1 for a
        convolution, -1 for a dense layer), or None when the unit's output is not the
        layer's own (a host unit): node knockout can then not zero channels of the clean
        output."""
        if self.host is not None:
            return None
        return 1 if isinstance(self.module, _CONV_TYPES) else -1

    def clean_tensors(self) -> dict[str, Tensor]:
        """role -> the model's own tensor for every role of the unit."""
        return dict(self.tensors)

    def _one(self, x: Tensor, rep: Mapping[str, Tensor]) -> object:
        """The unit for one replica's tensors ``rep`` (role -> tensor) on input ``x``."""
        if self.host is not None:
            params = {self.names[role]: t for role, t in rep.items() if role in self.names}
            y = torch.func.functional_call(self.host, params, (x,))
        elif isinstance(self.module, _CONV_TYPES):
            y = self.module._conv_forward(x, rep["weight"], rep.get("bias"))
        else:
            y = F.linear(x, rep["weight"], rep.get("bias"))
        bn = self.bn
        if bn is not None:
            use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
            y = F.batch_norm(
                y, bn.running_mean, bn.running_var, rep.get("bn_weight"), rep.get("bn_bias"),
                use_batch_stats, 0.0, bn.eps,
            )  # fmt: skip
        return y

    def unit(self, x: Tensor, wide: Mapping[str, Tensor], k: int):
        """The layer (and its BN) for ``k`` replicas, all on the same input.

        Args:
            x: the unit's input (B, ...).
            wide: role -> the replicas' tensors concatenated by :func:`widen` / :func:`widen_roles`
                (``weight`` (k * out, ...), ``bias`` / ``bn_weight`` / ``bn_bias`` (k * out,);
                ``bn_mean`` / ``bn_var`` are accepted and not needed: the BN's own running
                statistics are used).

        Returns:
            (k * B, ...) -- replica-major: rows ``r * B .. (r + 1) * B`` are replica r (a
            tuple of such for an attention module).
        """
        roles = [r for r in wide if r not in ("bn_mean", "bn_var")]
        outs = [self._one(x, {role: replica_slice(wide[role], r, k) for role in roles}) for r in range(k)]
        return cat_replicas(outs)

    def unit_each(self, x: Tensor, replicas: Sequence[Mapping[str, Tensor]]):
        """The layer (and its BN) for k replicas, each on its *own* input: replica r reads
        rows ``r * B .. (r + 1) * B`` of ``x`` (e.g. adversarial images made against replica
        r), with the same operation on the same shapes as one replica alone, so every
        replica's output equals it bit for bit.

        Args:
            x: (k * B, ...) replica-major unit inputs.
            replicas: k dicts role -> tensor, as :func:`widen_roles` takes them.

        Returns:
            (k * B, ...) replica-major, as :meth:`unit`.
        """
        k = len(replicas)
        b = x.shape[0] // k
        return cat_replicas([self._one(x[r * b : (r + 1) * b], rep) for r, rep in enumerate(replicas)])

    def run_suffix(self, u, live: Sequence[Tensor], k: int, *, exact: bool) -> Tensor:
        """Logits (k * B, classes) of ``k`` replicas from the unit output ``u`` (k * B rows,
        replica-major) and the batch's ``live`` values (B rows; not modified).

        ``exact=False``: one suffix call on the K-fold batch (the live values repeated k times).
        ``exact=True``: one suffix call per replica on its B rows -- the same operations on the
        same shapes as the naive loop, so the logits equal its logits bit for bit. (A matrix
        product on k * B rows need not round row r as one on B rows does: the CPU kernels
        handle rows in panels, and a row's panel depends on its position. Measured with one
        thread: ``F.linear`` on 3 rows against the same rows inside 6, 9 or 12, 87 of 315
        shapes with K <= 512 differed in the last bits, none when B was a multiple of 4.)
        """
        if not exact or k == 1:
            reps = [live[i].repeat(k, *([1] * (live[i].ndim - 1))) if k > 1 else live[i].clone() for i in self.suffix_live]
            return self.suffix(u, *reps)
        outs = [self.suffix(slice_replicas(u, r, k), *[live[i].clone() for i in self.suffix_live]) for r in range(k)]
        return torch.cat(outs)

    def forward(self, x: Tensor) -> Tensor:
        """The clean network through prefix, unit (K = 1) and suffix: logits (B, classes).
        Equals ``model(x)``; the tests check it bit for bit."""
        live = self.prefix(x)
        u = self.unit(live[self.unit_input], self.clean_tensors(), 1)
        return self.suffix(u, *[live[i] for i in self.suffix_live])


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


def standard_forward(module: nn.Module) -> bool:
    """True when ``module`` is a Conv1d/2d/3d or Linear whose ``forward`` is torch's own (the
    unit may compute it with ``F.conv*d`` / ``F.linear``)."""
    return (
        isinstance(module, (*_CONV_TYPES, nn.Linear))
        and type(module).forward in _STANDARD_FORWARDS
        and "forward" not in vars(module)
    )
