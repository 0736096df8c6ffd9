"""Synapse knockout and node knockout (Cheney et al. 2017; the Design page of the docs, "Perturbation semantics")."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from netperturb.perturb.base import ENTRIES, ROWS, Change, Perturbation, n_chosen
from netperturb.perturb.draws import choose_mask, stream_key

__all__ = ["SynapseKnockout", "NodeKnockout", "knocked_units"]


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
    changes = ENTRIES
    device_draws = True

    def __init__(self, include_bias: bool = True):
        self.include_bias = bool(include_bias)

    def options(self) -> dict[str, Any]:
        return {"include_bias": self.include_bias}

    def seed_independent(self, level: float) -> bool:
        """At level 1 every entry is knocked out, whatever the draw."""
        return float(level) >= 1.0

    def _draw(self, params, level, generator, context):
        roles = ["weight"] + (["bias"] if self.include_bias and params.get("bias") is not None else [])
        out = {}
        for role in roles:  # the weight's stream key first, then the bias's
            t = params[role]
            out[role] = Change("mask", choose_mask(t.numel(), n_chosen(level, t.numel()), stream_key(generator), t.device))
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
    changes = ROWS
    device_draws = True

    def __init__(self, bn_aware: bool = True):
        self.bn_aware = bool(bn_aware)

    def options(self) -> dict[str, Any]:
        return {"bn_aware": self.bn_aware}

    def seed_independent(self, level: float) -> bool:
        """At level 1 every unit is knocked out, whatever the draw."""
        return float(level) >= 1.0

    def zeroes_units(self, params) -> bool:
        """A knocked-out unit outputs exactly 0: its weights and bias are 0, and with a
        following BatchNorm (``bn_weight`` in ``params``) only when ``bn_aware`` zeroes its
        affine terms too."""
        return self.bn_aware or params.get("bn_weight") is None

    def _draw(self, params, level, generator, context):
        w = params["weight"]
        idx = knocked_units(w.shape[0], level, generator, w.device)
        roles = ["weight", "bias"] + (["bn_weight", "bn_bias"] if self.bn_aware else [])
        return {role: Change("rows", idx) for role in roles if params.get(role) is not None}
