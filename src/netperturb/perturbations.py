"""Perturbations of one layer's parameters: synapse knockout, node knockout, Gaussian noise.

A perturbation is a pure function of (the layer's tensors, a level, a CPU generator): it
returns *new* tensors for the roles it changes and never mutates its input (DESIGN.md,
"Perturbation semantics"). Roles are ``weight``, ``bias`` and, for node knockout with a
following BatchNorm, ``bn_weight`` / ``bn_bias`` (see :meth:`netperturb.layers.LayerInfo.param_names`).

Random draws (masks, noise) are made in bulk on the CPU generator of the grid cell and then
moved to the tensors' device, so the numbers do not depend on the device or dtype the network
runs in. Level 0 returns an empty dict: the clean network, bit for bit.

Sources:
    Cheney, Schrimpf, Kreiman 2017, "On the Robustness of Convolutional Neural Networks to
    Internal Architecture and Weight Perturbations", arXiv 1703.08245, Sec. 2 and the
    authors' code (kreimanlab/neural_net_robustness, ``perturb_weights.py``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Mapping

import torch
from torch import Tensor

__all__ = [
    "Perturbation",
    "SynapseKnockout",
    "NodeKnockout",
    "GaussianNoise",
    "PERTURBATIONS",
    "make_perturbation",
    "n_chosen",
]


def n_chosen(fraction: float, n: int) -> int:
    """floor(fraction * n), with the product rounded to 9 decimals first.

    The rounding makes decimal levels exact: 0.29 * 100 is 28.999999999999996 in binary
    floating point, and the count meant is 29.
    """
    return int(math.floor(round(float(fraction) * int(n), 9)))


#: Random sort keys are drawn in [0, 2**62): ties at the selection threshold have
#: probability about n / 2**62 (1e-11 for a 37.7 M-weight layer).
_KEY_HIGH = 1 << 62


def _choose(n: int, k: int, generator: torch.Generator) -> Tensor:
    """k distinct indices out of range(n), uniformly without replacement.

    Random-key selection: each of the n entries gets an independent uniform 62-bit key
    drawn from ``generator`` and the k entries with the smallest keys are chosen (a tie at
    the threshold, probability ~ n / 2**62, goes to the lower index, so exactly k are always
    chosen). This is a uniform k-subset like ``randperm(n)[:k]``, and about 2x faster for a
    large layer on a CPU (AlexNet fc6, 37.7 M weights: 1.5 s instead of 2.7 s), because the
    selection is O(n) and vectorised rather than a sequential shuffle.

    Args:
        n: population size; k: how many to choose (k <= 0: none; k >= n: all, without
            using the generator).
        generator: a CPU ``torch.Generator`` (the grid cell's).

    Returns:
        int64 CPU tensor (k,) of distinct indices in increasing order.
    """
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    if k >= n:
        return torch.arange(n)
    keys = torch.randint(0, _KEY_HIGH, (n,), generator=generator, dtype=torch.int64)
    kth = keys.kthvalue(k).values
    chosen = keys < kth
    missing = k - int(chosen.sum())
    if missing:
        chosen[torch.nonzero(keys == kth).squeeze(1)[:missing]] = True
    return torch.nonzero(chosen).squeeze(1)


class Perturbation(ABC):
    """Base class. Subclasses set ``name``, ``level_unit`` and ``max_level``.

    Call an instance as ``perturbation(params, level, generator)`` where ``params`` maps role
    -> tensor (``weight`` required; shapes (out, in, kh, kw) for Conv2d, (out, in) for Linear;
    ``bias`` (out,); ``bn_weight``/``bn_bias`` (out,)). It returns a dict role -> new tensor
    for the roles it changed (same shape, dtype and device as the input).
    """

    name: str = ""
    level_unit: str = ""
    max_level: float = math.inf
    stochastic: bool = True

    def options(self) -> dict[str, Any]:
        """The constructor options, for provenance."""
        return {}

    def check_level(self, level: float) -> float:
        """Return ``level`` as float.

        Raises:
            ValueError: if the level is negative, not finite or above ``max_level``.
        """
        level = float(level)
        if not math.isfinite(level) or level < 0 or level > self.max_level:
            raise ValueError(
                f"{self.name}: level {level!r} outside [0, {self.max_level}] ({self.level_unit})"
            )
        return level

    def __call__(
        self, params: Mapping[str, Tensor], level: float, generator: torch.Generator
    ) -> dict[str, Tensor]:
        level = self.check_level(level)
        if "weight" not in params:
            raise KeyError(f"{self.name}: params must contain 'weight', got {sorted(params)}")
        if level == 0:
            return {}
        with torch.no_grad():
            return self._apply(params, level, generator)

    @abstractmethod
    def _apply(
        self, params: Mapping[str, Tensor], level: float, generator: torch.Generator
    ) -> dict[str, Tensor]: ...

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


def _zero_entries(t: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    k = n_chosen(fraction, t.numel())
    idx = _choose(t.numel(), k, generator).to(t.device)
    out = t.detach().clone().reshape(-1)
    out[idx] = 0
    return out.reshape(t.shape)


class SynapseKnockout(Perturbation):
    """Synapse knockout at fraction p: exactly floor(p * n) of the layer's n weight entries,
    chosen uniformly without replacement, are set to 0; with ``include_bias`` the biases are
    knocked out the same way in a separate draw (floor(p * n_bias) of them), as the authors'
    code does.

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

    Unlike the authors' code, Linear *input* columns are not zeroed as well (DESIGN.md).
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
        n_out = w.shape[0]
        idx = _choose(n_out, n_chosen(level, n_out), generator).to(w.device)
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


def _add_noise(t: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    # the s.d. is taken on the CPU so that it (and the noise) does not depend on the device
    std = t.detach().cpu().double().std(unbiased=False).item() if t.numel() > 1 else 0.0
    noise = torch.randn(t.shape, generator=generator, dtype=torch.float32)
    return t.detach() + (noise * (sigma * std)).to(device=t.device, dtype=t.dtype)


class GaussianNoise(Perturbation):
    """Gaussian weight noise at level s: W' = W + N(0, (s * std(W))^2), i.e. zero-mean
    Gaussian noise whose standard deviation is s times the population standard deviation
    (ddof = 0, as numpy's ``np.std`` in the authors' code) of the whole weight tensor. With
    ``include_bias`` the bias gets its own noise scaled by its own std (drawn after the
    weight's). s = 0 is the identity.

    Level unit: multiples of the layer's weight std, >= 0. Source: Cheney et al. 2017, Sec.
    2.3 ("weight perturbation" with Gaussian noise, sigma relative to the layer's weights).
    """

    name = "gaussian_noise"
    level_unit = "multiples of the layer's weight std"
    max_level = math.inf

    def __init__(self, include_bias: bool = True):
        self.include_bias = bool(include_bias)

    def options(self) -> dict[str, Any]:
        return {"include_bias": self.include_bias}

    def _apply(self, params, level, generator):
        out = {"weight": _add_noise(params["weight"], level, generator)}
        if self.include_bias and params.get("bias") is not None:
            out["bias"] = _add_noise(params["bias"], level, generator)
        return out


PERTURBATIONS: dict[str, type[Perturbation]] = {
    SynapseKnockout.name: SynapseKnockout,
    NodeKnockout.name: NodeKnockout,
    GaussianNoise.name: GaussianNoise,
}


def make_perturbation(name: str, **options: Any) -> Perturbation:
    """Build a perturbation by name with its options (unknown options are an error).

    Raises:
        ValueError: unknown name (the message lists the known ones) or unknown option.
    """
    try:
        cls = PERTURBATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown perturbation {name!r}; known: {', '.join(sorted(PERTURBATIONS))}"
        ) from None
    try:
        return cls(**options)
    except TypeError as e:
        raise ValueError(f"perturbation {name!r}: bad options {options!r} ({e})") from None


# The synaptic filters of Pravin et al. 2024 (filter_low, filter_high, filter_pulse) live in
# their own module and register themselves here.
from . import filters as _filters  # noqa: E402,F401
