"""Which layers a network has that can be perturbed, how they are named, and selection.

A *layer* is a set of weights that computes output units ("nodes") from an input:

- ``conv``: an ``nn.Conv1d`` / ``Conv2d`` / ``Conv3d``, grouped and depthwise included. One
  node is output channel i: ``W[i]`` (shape ``(in / groups, *kernel)``) and ``b[i]``.
- ``linear``: an ``nn.Linear`` (also the ``out_proj`` of an ``nn.MultiheadAttention``). One
  node is output feature i: ``W[i, :]`` and ``b[i]`` (at every token when the input has
  tokens).
- ``in_proj``: an ``nn.MultiheadAttention``'s ``in_proj_weight`` / ``in_proj_bias`` (the
  separate ``q/k/v_proj_weight`` when ``kdim`` / ``vdim`` differ: one layer each, weight
  only). One node is row i of the ``(3E, E)`` matrix -- query feature i (i < E), key feature
  i - E, value feature i - 2E -- and ``in_proj_bias[i]``.

Each layer gets

- ``path``: its module path, e.g. ``features.0`` (unique; what result tables key on). The
  input projection of an attention module at ``blocks.0.attn`` is ``blocks.0.attn.in_proj``
  (its parameters are ``blocks.0.attn.in_proj_weight`` / ``in_proj_bias``);
- ``label``: the name figures and logs show (rule below);
- ``index``: 1-based position among the perturbable layers in module (definition) order;
- ``bn``: the path of the BatchNorm (1d, 2d or 3d) that directly and only consumes the
  layer's output with one channel per node (``num_features`` = the layer's node count), if
  any. Node knockout zeroes that BN channel's affine terms too, so that a knocked-out node
  outputs exactly 0 after the BN (Conv1d -> BatchNorm1d, Conv2d -> BatchNorm2d, Conv3d ->
  BatchNorm3d, Linear -> BatchNorm1d over features). A LayerNorm normalises across the nodes
  and is never such a follower: a knocked-out node's pre-norm output is 0.

**Labels.** The field's names ``conv1 .. convN`` (the convolutions in module order) then
``fc{N+1} ..`` (the dense layers), as AlexNet reads conv1..conv5, fc6..fc8 in Cheney et al.
2017 (Fig. 1) and Krizhevsky et al. 2012, label a network of the classic shape: no attention
input projection, and either dense layers only (an MLP) or convolutions followed by a
classifier of at most three dense layers -- LeNet-5, AlexNet, VGG, ResNet, MobileNet,
EfficientNet and most CNNs of one's own. Every other network is labelled by module path
(``label == path``): where convolutions and dense layers interleave (ConvNeXt's depthwise conv
of block 1 would be ``conv2`` and its first MLP layer ``fc25``, at depth 3) or where dense
layers make up the blocks (ViT, Swin: ``blocks.0.attn.qkv``, not ``fc2``), counting layers by
kind misleads. The rule reads only the list of layers, so a model and its exported or
TorchScript graph made a module again get the same labels. netperturb's LeNet-5 and
digit-scale AlexNet and torchvision's AlexNet and VGG always get the field's names
(``FIELD_LABELLED``); a model class can choose with a class attribute
``netperturb_layer_labels = "field"`` or ``"path"``, and ``find_layers(model, labels="field" |
"path")`` overrides the rule. Result tables key on ``path`` whatever the labels; a layer is
selected by either.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

__all__ = [
    "LayerInfo",
    "find_layers",
    "select_layers",
    "parameter_coverage",
    "layer_parts",
    "LayerSelectionError",
    "FIELD_LABELLED",
    "LABELS_ATTRIBUTE",
    "MAX_CLASSIFIER_LAYERS",
]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

#: Model classes (``module.qualname``) labelled with the field's conv1.., fcN.. names.
FIELD_LABELLED = (
    "netperturb.models.lenet.LeNet5",
    "netperturb.models.alexnet_digits.AlexNetDigits",
    "torchvision.models.alexnet.AlexNet",
    "torchvision.models.vgg.VGG",
)
#: Dense layers after the convolutions of a network that keeps the field's labels (module docstring).
MAX_CLASSIFIER_LAYERS = 3
#: Class attribute by which a model asks for ``"field"`` or ``"path"`` labels.
LABELS_ATTRIBUTE = "netperturb_layer_labels"


class LayerSelectionError(ValueError):
    """A layer selection names something the model does not have."""


@dataclass(frozen=True)
class LayerInfo:
    """One perturbable layer of a model.

    Attributes:
        path: module path of the layer (``model.get_submodule(path)`` returns it), or for a
            multi-head attention's input projection ``<attention path>.in_proj`` (also
            ``.q_proj`` / ``.k_proj`` / ``.v_proj``).
        label: the displayed name (see the module docstring).
        index: 1-based position among the perturbable layers (module order).
        kind: ``"conv"``, ``"linear"`` or ``"in_proj"``.
        weight_shape: shape of the weight: ``(out, in / groups, *kernel)`` for a convolution,
            (out, in) for a dense layer, (3E, E) for an input projection.
        has_bias: whether the layer has a bias.
        bn: path of the BatchNorm fed directly and only by this layer, or None.
        owner: path of the module that holds the parameters (``path`` for a module layer,
            the attention module for ``in_proj``).
        weight_attr, bias_attr: attribute names of the weight and bias on ``owner``.
        module_type: class name of the module (``"Conv2d"``, ``"Linear"``,
            ``"MultiheadAttention"``, ...).
        groups: the convolution's ``groups`` (1 otherwise).
    """

    path: str
    label: str
    index: int
    kind: str
    weight_shape: tuple[int, ...]
    has_bias: bool
    bn: str | None = None
    owner: str | None = None
    weight_attr: str = "weight"
    bias_attr: str = "bias"
    module_type: str = ""
    groups: int = 1

    @property
    def n_out(self) -> int:
        """Number of output units (nodes): conv filters, dense rows, input-projection rows."""
        return int(self.weight_shape[0])

    @property
    def module_path(self) -> str:
        """Path of the module that holds the layer's parameters (``owner``)."""
        return self.path if self.owner is None else self.owner

    @property
    def n_params(self) -> int:
        """Parameters of the layer: its weight entries plus its bias entries (one per output
        unit); the BatchNorm that follows it is not counted."""
        return math.prod(self.weight_shape) + (self.n_out if self.has_bias else 0)

    def param_names(self) -> dict[str, str]:
        """Map role -> full parameter name: ``weight``, ``bias``, ``bn_weight``, ``bn_bias``
        (only the roles that exist)."""
        prefix = f"{self.module_path}." if self.module_path else ""
        names = {"weight": f"{prefix}{self.weight_attr}"}
        if self.has_bias:
            names["bias"] = f"{prefix}{self.bias_attr}"
        if self.bn is not None:
            names["bn_weight"] = f"{self.bn}.weight"
            names["bn_bias"] = f"{self.bn}.bias"
        return names


def _n_out(mod: nn.Module) -> int | None:
    if isinstance(mod, _CONV_TYPES):
        return int(mod.out_channels)
    if isinstance(mod, nn.Linear):
        return int(mod.out_features)
    return None


def _follower(mod: nn.Module, nxt: nn.Module) -> bool:
    """``nxt`` is a BatchNorm with affine terms and one channel per output unit of ``mod``."""
    return isinstance(nxt, _BN_TYPES) and nxt.affine and nxt.num_features == _n_out(mod)


def _bn_followers_fx(model: nn.Module) -> dict[str, str] | None:
    """conv/linear path -> BN path, from the torch.fx graph; None if the model does not trace."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # dynamic control flow etc.: fall back to module adjacency
        return None
    modules = dict(model.named_modules())
    out: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or _n_out(modules.get(node.target)) is None:
            continue
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module":
            if _follower(modules[node.target], modules.get(users[0].target)):
                out[node.target] = users[0].target
    return out


def _bn_followers_adjacent(model: nn.Module) -> dict[str, str]:
    """conv/linear path -> BN path when the BN is the next module in the same container."""
    out: dict[str, str] = {}
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for (name, mod), (next_name, nxt) in zip(children, children[1:]):
            if _n_out(mod) is not None and _follower(mod, nxt):
                prefix = f"{parent_name}." if parent_name else ""
                out[prefix + name] = prefix + next_name
    return out


def _label_rule(model: nn.Module, found: list[tuple[str, str, nn.Module, dict]]) -> str:
    """``"field"`` or ``"path"`` for ``model`` (module docstring, "Labels")."""
    asked = getattr(type(model), LABELS_ATTRIBUTE, None)
    if asked in ("field", "path"):
        return asked
    for cls in inspect.getmro(type(model)):
        if f"{cls.__module__}.{cls.__qualname__}" in FIELD_LABELLED:
            return "field"
    kinds = [kind for _, kind, _, _ in found]
    if "in_proj" in kinds or ("linear" in kinds and "conv" in kinds[kinds.index("linear"):]):
        return "path"  # attention, or convolutions and dense layers interleave
    if "conv" in kinds and kinds.count("linear") > MAX_CLASSIFIER_LAYERS:
        return "path"  # dense layers beyond a classifier: transformer blocks (ViT, Swin)
    return "field"


def _candidates(model: nn.Module) -> list[tuple[str, str, nn.Module, dict]]:
    """(path, kind, module, extra LayerInfo fields) for every layer, in module order."""
    found = []
    for path, mod in model.named_modules():
        if isinstance(mod, _CONV_TYPES):
            found.append((path, "conv", mod, {"groups": int(mod.groups)}))
        elif isinstance(mod, nn.Linear):
            found.append((path, "linear", mod, {}))
        elif isinstance(mod, nn.MultiheadAttention):
            prefix = f"{path}." if path else ""
            bias = mod.in_proj_bias is not None
            if mod.in_proj_weight is not None:
                extra = {"owner": path, "weight_attr": "in_proj_weight", "bias_attr": "in_proj_bias", "has_bias": bias,
                         "weight": mod.in_proj_weight}  # fmt: skip
                found.append((f"{prefix}in_proj", "in_proj", mod, extra))
            else:  # kdim / vdim differ from embed_dim: three projection matrices (their bias is in_proj_bias)
                for name in ("q", "k", "v"):
                    w = getattr(mod, f"{name}_proj_weight")
                    extra = {"owner": path, "weight_attr": f"{name}_proj_weight", "has_bias": False, "weight": w}
                    found.append((f"{prefix}{name}_proj", "in_proj", mod, extra))
    return found


def find_layers(model: nn.Module, labels: str = "auto") -> list[LayerInfo]:
    """Every perturbable layer of ``model`` (module docstring), in module (definition) order.

    Works on models built on the ``meta`` device, so listing the layers of VGG16 or ViT-B/16
    costs no memory.

    Args:
        model: any ``nn.Module``.
        labels: ``"auto"`` (the rule of the module docstring), ``"field"`` (conv1..,
            fcN..) or ``"path"`` (label = module path).

    Returns:
        A list of :class:`LayerInfo`.

    Raises:
        ValueError: ``labels`` is not one of the three.
    """
    if labels not in ("auto", "field", "path"):
        raise ValueError(f"labels: {labels!r} unknown; use 'auto', 'field' or 'path'")
    found = _candidates(model)
    rule = _label_rule(model, found) if labels == "auto" else labels
    followers = _bn_followers_fx(model)
    if followers is None:
        followers = _bn_followers_adjacent(model)
    n_conv = sum(kind == "conv" for _, kind, _, _ in found)
    layers: list[LayerInfo] = []
    conv_i = dense_i = 0
    for i, (path, kind, mod, extra) in enumerate(found, start=1):
        if kind == "conv":
            conv_i += 1
            field = f"conv{conv_i}"
        else:
            dense_i += 1
            field = f"fc{n_conv + dense_i}"
        extra = dict(extra)
        weight = extra.pop("weight", None)
        if weight is None:
            weight = mod.weight
        has_bias = extra.pop("has_bias", getattr(mod, "bias", None) is not None)
        layers.append(
            LayerInfo(
                path=path,
                label=field if rule == "field" else path,
                index=i,
                kind=kind,
                weight_shape=tuple(weight.shape),
                has_bias=has_bias,
                bn=followers.get(path),
                module_type=type(mod).__name__,
                **extra,
            )
        )
    return layers


def parameter_coverage(model: nn.Module, layers: Sequence[LayerInfo] | None = None) -> float:
    """Fraction of ``model``'s parameter entries that are a weight or bias of a layer
    (BatchNorm affine terms, LayerNorm terms, embeddings, position tables and class tokens
    are not). Shared parameters count once.

    Args:
        model: any ``nn.Module`` (``meta`` device fine).
        layers: from :func:`find_layers` (default: all of ``model``'s).

    Returns:
        A fraction in [0, 1] (1.0 for a model without parameters).
    """
    layers = find_layers(model) if layers is None else layers
    named = dict(model.named_parameters())
    covered = {id(named[n]): named[n].numel() for l in layers for r, n in l.param_names().items() if r in ("weight", "bias") and n in named}
    total = sum(p.numel() for p in model.parameters())
    return 1.0 if total == 0 else sum(covered.values()) / total


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
            shown = [l.path if l.label == l.path else f"{l.path} ({l.label})" for l in layers]
            more = f", ... ({len(shown) - 40} more: `netperturb layers` lists them all)" if len(shown) > 40 else ""
            raise LayerSelectionError(
                f"layer {pattern!r} matches no perturbable layer (conv, linear, attention in_proj); "
                f"available: {', '.join(shown[:40])}{more}"
            )
        chosen.update(hits)
    return [l for l in layers if l.path in chosen]


def layer_parts(layers: Sequence[LayerInfo], per_job: int | None) -> dict[str, list[str]]:
    """Split selected layers (depth order) into jobs of ``per_job`` layers each (None: all in
    one job): part name ``"<k>of<n>"`` -> the module paths of part k, depth order kept.

    The studies name their per-job tables by part (``layers_<k>of<n>.csv``): one process per
    part pays the imports, the model and the images once for its layers.

    Raises:
        ValueError: ``per_job`` below 1, or no layers.
    """
    if per_job is not None and int(per_job) < 1:
        raise ValueError(f"layer_parts: per_job must be >= 1 or None, got {per_job!r}")
    if not layers:
        raise ValueError("layer_parts: no layers")
    size = int(per_job or len(layers))
    chunks = [list(layers[i : i + size]) for i in range(0, len(layers), size)]
    return {f"{k + 1}of{len(chunks)}": [la.path for la in c] for k, c in enumerate(chunks)}
