"""Which layers of a model can be perturbed: :func:`layers` and :func:`layer_table`."""

from __future__ import annotations

from torch import nn

from netperturb.core.layers import LayerInfo, LayerSelectionError, find_layers, select_layers

__all__ = ["layers", "layer_table", "find_layer"]


def layers(model: nn.Module) -> list[LayerInfo]:
    """Every perturbable layer of ``model``, in module (depth) order.

    Each :class:`~netperturb.core.layers.LayerInfo` has the layer's module ``path`` (e.g.
    ``features.0``, or ``encoder.layers.encoder_layer_0.self_attention.in_proj`` for an
    attention's input projection; what result tables key on and what
    :func:`netperturb.perturbed` and :func:`netperturb.run_grid` take), its ``label``
    (``conv1 .. convN`` for the convolutions, then ``fc{N+1} ..`` for the dense layers, as in
    Cheney et al. 2017 Fig. 1, for the shipped networks and CNNs of one's own; the module path
    for torchvision and timm models and wherever convolutions and dense layers interleave: the
    rule is in :mod:`netperturb.core.layers`), ``index`` (1-based depth), ``kind`` (``conv``:
    ``nn.Conv1d`` / ``Conv2d`` / ``Conv3d``, grouped and depthwise included; ``linear``:
    ``nn.Linear``, also an attention's ``out_proj``; ``in_proj``: the ``in_proj_weight`` /
    ``in_proj_bias`` of an ``nn.MultiheadAttention``, rows = query, key, value features),
    ``module_type`` (the module's class name), ``groups`` (a convolution's groups),
    ``weight_shape`` (``(out, in / groups, *kernel)``, ``(out, in)`` or ``(3E, E)``), ``n_params`` (weight
    + bias entries), ``has_bias`` and ``bn`` (the BatchNorm fed directly by the layer, which a
    node knockout zeroes too).

    Works on any ``nn.Module`` (also on the ``meta`` device: no memory is needed).
    """
    return find_layers(model)


def layer_table(model: nn.Module):
    """:func:`layers` as a pandas DataFrame, one row per layer: ``index, path, label, kind,
    module_type, groups, weight_shape, n_params, has_bias, bn`` and ``share`` (the layer's parameters as a fraction
    of all the model's parameters, BatchNorm and others included)."""
    import pandas as pd

    found = find_layers(model)
    total = sum(p.numel() for p in model.parameters()) or 1
    return pd.DataFrame(
        [{"index": l.index, "path": l.path, "label": l.label, "kind": l.kind, "module_type": l.module_type,
          "groups": l.groups, "weight_shape": tuple(l.weight_shape),
          "n_params": l.n_params, "has_bias": l.has_bias, "bn": l.bn, "share": l.n_params / total} for l in found],
        columns=["index", "path", "label", "kind", "module_type", "groups", "weight_shape", "n_params", "has_bias", "bn", "share"],
    )  # fmt: skip


def find_layer(model: nn.Module, layer: str | LayerInfo) -> LayerInfo:
    """The one perturbable layer ``layer`` names: a module path (``features.0``), a label
    (``conv1``) or a :class:`~netperturb.core.layers.LayerInfo`.

    Raises:
        LayerSelectionError: no layer, or several, match (the message lists what exists).
    """
    found = find_layers(model)
    if isinstance(layer, LayerInfo):
        layer = layer.path
    hits = select_layers(found, [layer])
    if len(hits) != 1:
        raise LayerSelectionError(
            f"layer {layer!r} matches {len(hits)} layers ({', '.join(l.path for l in hits)}); name one by its path or label"
        )
    return hits[0]
