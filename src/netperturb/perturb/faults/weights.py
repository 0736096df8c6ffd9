"""Faults in stored weights: bit flips, stuck-at bits, multiplicative noise (the Hardware faults page of the docs).

The bit faults act on a network whose Conv2d / Linear weights are already stored in the
fault's format (:func:`format_model`: fp16 / bf16 cast, int8 quantize-dequantize as torch.ao
does it; fp32 is the network itself). On such a network level 0 changes nothing, so level 0 is
the format's network bit for bit, and every weight a fault does not hit keeps its value bit for
bit. Weights that are not stored in the fault's format are an error (never a silent
conversion): :meth:`~netperturb.perturb.base.Perturbation.prepare` of each bit fault checks them.

A bit fault changes a few entries (``changes = "entries"``): its draw is the list of the hit
weights and their new values, which the engine writes in place and undoes, or adds to the
clean layer output as a sparse correction (:mod:`netperturb.perturb.engine.sparse`).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from netperturb.core.layers import find_layers
from netperturb.perturb.base import ENTRIES, Change, Perturbation
from netperturb.perturb.faults.bits import (
    StuckValue,
    GRANULARITIES,
    bit_positions,
    check_count,
    check_format,
    check_stored,
    choose_bits,
    combine_masks,
    from_bits,
    to_bits,
    to_format,
)

__all__ = ["BitFlip", "StuckAt", "MultiplicativeNoise", "format_model", "WEIGHT_FAULTS"]


def format_model(model: nn.Module, fmt: str, granularity: str = "tensor", include_bias: bool = False) -> nn.Module:
    """A copy of ``model`` whose every layer's weight (:func:`netperturb.core.layers.find_layers`:
    Conv1d/2d/3d, Linear, attention in_proj; and bias, with
    ``include_bias``) is stored in ``fmt`` and read back as float32 (:func:`to_format`):
    the fault-free reference network of a bit-fault study in that format (fp32: ``model``
    itself, not a copy). BatchNorm parameters stay float32 (folded into the preceding layer
    in deployed accelerators; chosen).

    Raises:
        ValueError: unknown format or granularity.
    """
    check_format(fmt)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity: {granularity!r} unknown; allowed: {', '.join(GRANULARITIES)}")
    if fmt == "fp32":
        return model
    out = copy.deepcopy(model)
    named = dict(out.named_parameters())
    with torch.no_grad():
        for layer in find_layers(out):  # every layer: Conv1d/2d/3d, Linear, attention in_proj
            names = layer.param_names()
            named[names["weight"]].copy_(to_format(named[names["weight"]], fmt, granularity))
            if include_bias and "bias" in names:
                named[names["bias"]].copy_(to_format(named[names["bias"]], fmt, "tensor"))
    return out


class _BitFault(Perturbation):
    """Shared by :class:`BitFlip` and :class:`StuckAt`: format, positions, count, bias switch."""

    level_unit = "bit error rate (fraction of the eligible stored bits)"
    max_level = 1.0
    changes = ENTRIES

    def __init__(
        self, format: str = "fp32", bits: str | Sequence[int] = "all", granularity: str = "tensor",
        include_bias: bool = False, count: str = "binomial",
    ):  # fmt: skip
        self.format = check_format(format).name
        self.bits = bits if isinstance(bits, str) else [int(b) for b in bits]
        self.positions = bit_positions(self.format, self.bits)
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity: {granularity!r} unknown; allowed: {', '.join(GRANULARITIES)}")
        self.granularity = granularity
        self.include_bias = bool(include_bias)
        self.count = check_count(count)

    def options(self) -> dict[str, Any]:
        return {"format": self.format, "bits": self.bits, "granularity": self.granularity,
                "include_bias": self.include_bias, "count": self.count}  # fmt: skip

    def roles(self, params: Mapping[str, Tensor]) -> list[str]:
        """The roles whose stored values can be hit: ``weight`` (and ``bias``)."""
        return ["weight"] + (["bias"] if self.include_bias and params.get("bias") is not None else [])

    def _granularity(self, role: str) -> str:
        return self.granularity if role == "weight" else "tensor"

    def reference(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """role -> the fault-free tensor in the format (level 0), for every role that can be
        hit: the fp32 tensor stored in the format and read back (:func:`to_format`)."""
        return {r: to_format(params[r].detach(), self.format, self._granularity(r)) for r in self.roles(params)}

    def prepare(self, params: Mapping[str, Tensor]) -> dict:
        """role -> the int8 scale of the stored tensor (None for the float formats), after
        checking that every role that can be hit is stored in the format.

        Raises:
            ValueError: a tensor not stored in the format (e.g. ``format: int8`` on an fp32
                network), naming the role and the remedy
                (:func:`~netperturb.perturb.faults.bits.check_stored`).
        """
        out = {}
        for role in self.roles(params):
            try:
                out[role] = check_stored(params[role], self.format, self._granularity(role), what=f"{role} values")
            except ValueError as e:
                raise ValueError(f"{self.name}: {e}") from None
        return out

    def _combine(self, patterns: Tensor, masks: Tensor) -> Tensor:
        raise NotImplementedError

    def _draw(self, params, level, generator, context):
        out = {}
        for role in self.roles(params):  # the weight's draw first, then the bias's
            t = params[role].detach()
            idx, masks = combine_masks(*choose_bits(t.numel(), self.positions, level, generator, self.count))
            if not idx.numel():  # nothing hit: the role is still reported, with no entry changed
                out[role] = Change("entries", idx.to(t.device), t.new_empty(0))
                continue
            idx_d = idx.to(t.device)
            scale = context[role]
            s = scale.expand_as(t).reshape(-1)[idx_d] if scale is not None else None
            old = to_bits(t.reshape(-1)[idx_d], self.format, s)
            new = from_bits(self._combine(old, masks.to(t.device)), self.format, s).to(t.dtype)
            out[role] = Change("entries", idx_d, new)
        return out


class BitFlip(_BitFault):
    """Bit flips in stored weights at bit error rate r, flipped by integer XOR on the stored
    bit pattern. The count of flipped bits among the layer's ``n * m`` eligible stored bits (n
    weights, m eligible positions per weight: every bit of the format, or those of ``bits``):

    - ``count: binomial`` (default): each eligible bit flips independently with probability r,
      so the count is a Binomial(n * m, r) draw from the cell's generator
      (:func:`~netperturb.perturb.faults.bits.n_faults`);
    - ``count: exact``: exactly ``floor(r * n * m)`` (netperturb 0.2).

    The flipped bits are then chosen uniformly without replacement with the same generator
    (:func:`~netperturb.perturb.faults.bits.choose_bits`). The rate is per *eligible* bit: an
    exponent-only flip at rate r hits the exponent bits exactly as often as a whole-word flip
    at rate r does, so the two are comparable directly.

    Options: ``format`` (fp32 | fp16 | bf16 | int8; the weights must already be stored in it,
    :func:`format_model`), ``bits`` (all | sign | exponent | mantissa | list of indices, 0 =
    least significant), ``granularity`` (int8 scale per ``tensor`` or per output ``channel``),
    ``include_bias`` (biases hit too, in a separate draw after the weights', per-tensor scale),
    ``count`` (binomial | exact).

    A flip may give Inf or NaN (an exponent of all ones): that is a result, not an error.

    Sources: the weight bit-flip fault model with a bit error rate as in Reagen et al. 2018
    ("Ares", DAC) and MRFI (Huang et al. 2023; ``RandomPositionByRate`` + ``FloatRandomBitFlip``:
    a Poisson number of weights, one random bit each) -- the per-bit binomial count here is the
    exact form of the same rate. PyTorchFI 0.6 has no weight bit flip (``declare_weight_fi``
    sets a value or calls a user function at given coordinates), and TensorFI2 flips a given
    number of bits of chosen weights.
    """

    name = "bit_flip"

    def _combine(self, patterns, masks):
        return patterns ^ masks


class StuckAt(StuckValue, _BitFault):
    """Stuck-at bits at rate r: the same selection as :class:`BitFlip` (``count``: binomial or
    exact), each chosen bit forced to ``value`` (0 or 1); a chosen bit that already holds
    ``value`` is unchanged. Source: the stuck-at fault model of memory cells (e.g. Reagen et
    al. 2018, "Ares", DAC)."""

    name = "stuck_at"

    def __init__(self, value: int = 1, **options):
        super().__init__(**options)
        self._set_value(value)


class MultiplicativeNoise(Perturbation):
    """Multiplicative weight noise at level s: ``W' = W * (1 + N(0, s^2))``, one independent
    factor per weight (biases too with ``include_bias``, drawn after the weights). The model
    of analog / NVM programming noise (e.g. Joshi et al. 2020, Nat. Commun. 11:2473, where
    the conductance error scales with the programmed value). Level unit: relative s.d., >= 0.
    """

    name = "multiplicative_noise"
    level_unit = "relative s.d. of the weight factor"
    max_level = math.inf

    def __init__(self, include_bias: bool = False):
        self.include_bias = bool(include_bias)

    def options(self) -> dict[str, Any]:
        return {"include_bias": self.include_bias}

    def _apply(self, params, level, generator):
        roles = ["weight"] + (["bias"] if self.include_bias and params.get("bias") is not None else [])
        out = {}
        for role in roles:
            t = params[role].detach()
            noise = torch.randn(t.shape, generator=generator, dtype=torch.float32)
            out[role] = t * (1 + level * noise).to(device=t.device, dtype=t.dtype)
        return out


WEIGHT_FAULTS = {cls.name: cls for cls in (BitFlip, StuckAt, MultiplicativeNoise)}
