"""Which layers a network has that can be perturbed, how they are named, and selection.

A *layer* here is a ``torch.nn.Conv2d`` or ``torch.nn.Linear`` module (the layers Cheney et
al. 2017 perturb: every conv and dense layer). Each gets

- ``path``: its module path, e.g. ``features.0`` (unique; what result tables key on);
- ``label``: the field's short name, ``conv1 .. convN`` for the convolutions in module order,
  then ``fc{N+1} ..`` for the dense layers, so torchvision's AlexNet reads conv1..conv5,
  fc6..fc8 as in Cheney et al. (Fig. 1) and Krizhevsky et al. 2012;
- ``index``: 1-based position among the perturbable layers (depth order);
- ``bn``: the path of the BatchNorm that directly consumes the layer's output, if any (node
  knockout zeroes that BN channel too so a knocked-out node really outputs 0).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

__all__ = ["LayerInfo", "find_layers", "select_layers", "LayerSelectionError"]

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


class LayerSelectionError(ValueError):
    """A layer selection names something the model does not have."""


@dataclass(frozen=True)
class LayerInfo:
    """One perturbable layer of a model.

    Attributes:
        path: module path (``model.get_submodule(path)`` returns it).
        label: conv1.., fcN.. (see module docstring).
        index: 1-based depth position among Conv2d/Linear layers.
        kind: ``"conv"`` or ``"linear"``.
        weight_shape: shape of ``.weight`` (out, in, kh, kw) or (out, in).
        has_bias: whether the module has a bias.
        bn: path of the BatchNorm fed directly by this layer, or None.
    """

    path: str
    label: str
    index: int
    kind: str
    weight_shape: tuple[int, ...]
    has_bias: bool
    bn: str | None = None

    @property
    def n_out(self) -> int:
        """Number of output units (conv filters or dense rows)."""
        return int(self.weight_shape[0])

    @property
    def n_params(self) -> int:
        """Parameters of the layer: its weight entries plus its bias entries (one per output
        unit); the BatchNorm that follows it is not counted."""
        return math.prod(self.weight_shape) + (self.n_out if self.has_bias else 0)

    def param_names(self) -> dict[str, str]:
        """Map role -> full parameter name: ``weight``, ``bias``, ``bn_weight``, ``bn_bias``
        (only the roles that exist)."""
        names = {"weight": f"{self.path}.weight"}
        if self.has_bias:
            names["bias"] = f"{self.path}.bias"
        if self.bn is not None:
            names["bn_weight"] = f"{self.bn}.weight"
            names["bn_bias"] = f"{self.bn}.bias"
        return names


def _bn_followers_fx(model: nn.Module) -> dict[str, str] | None:
    """conv/linear path -> BN path, from the torch.fx graph; None if the model does not trace."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # dynamic control flow etc.: fall back to module adjacency
        return None
    modules = dict(model.named_modules())
    out: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), (nn.Conv2d, nn.Linear)):
            continue
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module":
            target = modules.get(users[0].target)
            if isinstance(target, _BN_TYPES) and target.affine:
                out[node.target] = users[0].target
    return out


def _bn_followers_adjacent(model: nn.Module) -> dict[str, str]:
    """conv/linear path -> BN path when the BN is the next module in the same container."""
    out: dict[str, str] = {}
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for (name, mod), (next_name, nxt) in zip(children, children[1:]):
            if isinstance(mod, (nn.Conv2d, nn.Linear)) and isinstance(nxt, _BN_TYPES) and nxt.affine:
                prefix = f"{parent_name}." if parent_name else ""
                out[prefix + name] = prefix + next_name
    return out


def find_layers(model: nn.Module) -> list[LayerInfo]:
    """Every Conv2d and Linear module of ``model``, in module (definition) order.

    Works on models built on the ``meta`` device, so listing the layers of VGG16 costs no
    memory. Returns a list of :class:`LayerInfo`.
    """
    found = [(p, m) for p, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    followers = _bn_followers_fx(model)
    if followers is None:
        followers = _bn_followers_adjacent(model)
    n_conv = sum(isinstance(m, nn.Conv2d) for _, m in found)
    layers: list[LayerInfo] = []
    conv_i = lin_i = 0
    for i, (path, mod) in enumerate(found, start=1):
        if isinstance(mod, nn.Conv2d):
            conv_i += 1
            label, kind = f"conv{conv_i}", "conv"
        else:
            lin_i += 1
            label, kind = f"fc{n_conv + lin_i}", "linear"
        layers.append(
            LayerInfo(
                path=path,
                label=label,
                index=i,
                kind=kind,
                weight_shape=tuple(mod.weight.shape),
                has_bias=mod.bias is not None,
                bn=followers.get(path),
            )
        )
    return layers


def select_layers(layers: Sequence[LayerInfo], selection: str | Iterable[str]) -> list[LayerInfo]:
    """Pick layers by module path, label or glob (fnmatch) on either; keep depth order.

    Args:
        layers: from :func:`find_layers`.
        selection: ``"all"``, or a list of strings such as ``["features.0", "fc*"]``.

    Raises:
        LayerSelectionError: an entry matches no layer; the message lists what exists.
    """
    if isinstance(selection, str):
        if selection == "all":
            return list(layers)
        selection = [selection]
    chosen: set[str] = set()
    for pattern in selection:
        hits = [
            l.path
            for l in layers
            if pattern in (l.path, l.label)
            or fnmatch.fnmatchcase(l.path, pattern)
            or fnmatch.fnmatchcase(l.label, pattern)
        ]
        if not hits:
            available = ", ".join(f"{l.path} ({l.label})" for l in layers)
            raise LayerSelectionError(
                f"layer {pattern!r} matches no Conv2d/Linear layer; available: {available}"
            )
        chosen.update(hits)
    return [l for l in layers if l.path in chosen]
