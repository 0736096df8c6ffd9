"""Synapse knockout and node knockout (Cheney et al. 2017; the Design page of the docs, "Perturbation semantics")."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from netperturb.perturb.base import Perturbation, n_chosen
from netperturb.perturb.draws import choose_mask, stream_key

__all__ = ["SynapseKnockout", "NodeKnockout"]


def _zero_entries(t: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    mask = choose_mask(t.numel(), n_chosen(fraction, t.numel()), stream_key(generator), t.device)
    return t.detach().masked_fill(mask.view(t.shape), 0)


def knocked_units(n_out: int, fraction: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """int64 (floor(fraction * n_out),) on ``device``: the output units a node knockout zeroes
    (increasing order), from one counter-based stream of ``generator``."""
    mask = choose_mask(n_out, n_chosen(fraction, n_out), stream_key(generator), device)
    return torch.nonzero(mask).squeeze(1)


class SynapseKnockout(Perturbation):
    """Synapse knockout at fraction p: exactly floor(p * n) of the layer's n weight entries,
    chosen uniformly without replacement, are set to 0; with ``include_bias`` the biases are
    knocked out the same way in a separate draw (floor(p * n_bias) of them), as the authors'
    code does. The choice is a counter-based draw on the weights' device
    (:func:`netperturb.perturb.draws.choose_mask`, one stream key per tensor from
    ``generator``): the same entries on every device.

    Level unit: fraction of weights, in [0, 1]. Source: Cheney et al. 2017, Sec. 2.2
    ("synapse knockout"); kreimanlab/neural_net_robustness ``synapse_knockout``.
    """

    name = "synapse_knockout"
    level_unit = "fraction of weights"
    max_level = 1.0

    def __init__(self, include_bias: bool = True):
        self.include_bias = bool(include_bias)

    def options(self) -> dict[str, Any]:
        return {"include_bias": self.include_bias}

    def _apply(self, params, level, generator):
        out = {"weight": _zero_entries(params["weight"], level, generator)}
        if self.include_bias and params.get("bias") is not None:
            out["bias"] = _zero_entries(params["bias"], level, generator)
        return out


class NodeKnockout(Perturbation):
    """Node knockout at fraction p: floor(p * n_out) output units (Conv2d filters ``W[i]``,
    Linear rows ``W[i, :]``), chosen uniformly without replacement, are zeroed with their
    biases. With ``bn_aware`` and a BatchNorm fed directly by the layer (roles ``bn_weight``,
    ``bn_bias``), that BN channel's affine terms are zeroed too, so the node outputs exactly 0
    after BN (otherwise BN would turn the zero into -mean/std * gamma + beta).

    Unlike the authors' code, Linear *input* columns are not zeroed as well (the cheney2017 page of the
    docs, "Departures from the authors' code").
    Level unit: fraction of output units, in [0, 1]. Source: Cheney et al. 2017, Sec. 2.2
    ("node knockout").
    """

    name = "node_knockout"
    level_unit = "fraction of output units"
    max_level = 1.0

    def __init__(self, bn_aware: bool = True):
        self.bn_aware = bool(bn_aware)

    def options(self) -> dict[str, Any]:
        return {"bn_aware": self.bn_aware}

    def _apply(self, params, level, generator):
        w = params["weight"]
        idx = knocked_units(w.shape[0], level, generator, w.device)
        out = {}
        new_w = w.detach().clone()
        new_w[idx] = 0
        out["weight"] = new_w
        roles = ["bias"] + (["bn_weight", "bn_bias"] if self.bn_aware else [])
        for role in roles:
            t = params.get(role)
            if t is not None:
                new_t = t.detach().clone()
                new_t[idx] = 0
                out[role] = new_t
        return out
