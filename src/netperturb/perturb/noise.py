"""Additive Gaussian weight noise scaled by the layer's weight s.d. (Cheney et al. 2017)."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from netperturb.perturb.base import Change, Perturbation
from netperturb.perturb.draws import normal, stream_key

__all__ = ["GaussianNoise"]


def _std(t: Tensor) -> float:
    """Population s.d. of ``t``, taken on the CPU in float64 so that it (and the noise) does not
    depend on the device."""
    return t.detach().cpu().double().std(unbiased=False).item() if t.numel() > 1 else 0.0


class GaussianNoise(Perturbation):
    """Gaussian weight noise at level s: W' = W + N(0, (s * std(W))^2), i.e. zero-mean
    Gaussian noise whose standard deviation is s times the population standard deviation
    (ddof = 0, as numpy's ``np.std`` in the authors' code) of the whole weight tensor. With
    ``include_bias`` the bias gets its own noise scaled by its own std (drawn after the
    weight's). s = 0 is the identity. The noise is a counter-based draw on the weights' device
    (:func:`netperturb.perturb.draws.normal`, one stream key per tensor from ``generator``).

    Level unit: multiples of the layer's weight std, >= 0. Source: Cheney et al. 2017, Sec.
    2.3 ("weight perturbation" with Gaussian noise, sigma relative to the layer's weights).
    """

    name = "gaussian_noise"
    level_unit = "multiples of the layer's weight std"
    max_level = math.inf

    def __init__(self, include_bias: bool = True):
        self.include_bias = bool(include_bias)

    device_draws = True

    def options(self) -> dict[str, Any]:
        return {"include_bias": self.include_bias}

    def _roles(self, params) -> list[str]:
        return ["weight"] + (["bias"] if self.include_bias and params.get("bias") is not None else [])

    def prepare(self, params) -> dict:
        """role -> the tensor's population s.d. (computed once per job)."""
        return {role: _std(params[role]) for role in self._roles(params)}

    def _draw(self, params, level, generator, context):
        out = {}
        for role in self._roles(params):  # the weight's stream key first, then the bias's
            t = params[role]
            noise = normal(stream_key(generator), t.shape, t.device)
            out[role] = Change("add", (noise * (level * context[role])).to(dtype=t.dtype))
        return out
