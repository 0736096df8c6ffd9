"""Faults in stored weights: bit flips, stuck-at bits, multiplicative noise (the Hardware faults page of the docs).

The bit faults act on a network whose Conv2d / Linear weights are already stored in the
fault's format (:func:`format_model`: fp16 / bf16 cast, int8 quantize-dequantize; fp32 is the
network itself). On such a network level 0 changes nothing, so level 0 is the format's
network bit for bit, and every weight a fault does not hit keeps its value bit for bit.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from netperturb.core.layers import find_layers
from netperturb.perturb.base import Perturbation
from netperturb.perturb.faults.bits import (
    StuckValue,
    GRANULARITIES,
    bit_positions,
    check_format,
    choose_bits,
    combine_masks,
    from_bits,
    quantize_int8,
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
    """Shared by :class:`BitFlip` and :class:`StuckAt`: format, positions, bias switch."""

    level_unit = "bit error rate (fraction of the eligible stored bits)"
    max_level = 1.0

    def __init__(
        self, format: str = "fp32", bits: str | Sequence[int] = "all", granularity: str = "tensor",
        include_bias: bool = False,
    ):  # fmt: skip
        self.format = check_format(format).name
        self.bits = bits if isinstance(bits, str) else [int(b) for b in bits]
        self.positions = bit_positions(self.format, self.bits)
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity: {granularity!r} unknown; allowed: {', '.join(GRANULARITIES)}")
        self.granularity = granularity
        self.include_bias = bool(include_bias)

    def options(self) -> dict[str, Any]:
        return {"format": self.format, "bits": self.bits, "granularity": self.granularity,
                "include_bias": self.include_bias}  # fmt: skip

    def roles(self, params: Mapping[str, Tensor]) -> list[str]:
        """The roles whose stored values can be hit: ``weight`` (and ``bias``)."""
        return ["weight"] + (["bias"] if self.include_bias and params.get("bias") is not None else [])

    def reference(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """role -> the fault-free tensor in the format (level 0), for every role that can be hit."""
        return {
            r: to_format(params[r].detach(), self.format, self.granularity if r == "weight" else "tensor")
            for r in self.roles(params)
        }

    def _combine(self, patterns: Tensor, masks: Tensor) -> Tensor:
        raise NotImplementedError

    def _apply(self, params, level, generator):
        out = {}
        for role in self.roles(params):
            t = params[role].detach()
            gran = self.granularity if role == "weight" else "tensor"
            ref = to_format(t, self.format, gran)
            scale = quantize_int8(t, gran)[1] if self.format == "int8" else None
            idx, masks = combine_masks(*choose_bits(t.numel(), self.positions, level, generator))
            new = ref.clone(memory_format=torch.contiguous_format)
            if idx.numel():
                flat = new.view(-1)
                idx_d = idx.to(t.device)
                s = None
                if scale is not None:
                    s = scale.expand_as(t).reshape(-1)[idx_d]
                old = to_bits(flat[idx_d], self.format, s)
                flat[idx_d] = from_bits(self._combine(old, masks.to(t.device)), self.format, s).to(t.dtype)
            out[role] = new
        return out


class BitFlip(_BitFault):
    """Bit flips in stored weights at bit error rate r: exactly ``floor(r * n * m)`` of the
    layer's ``n * m`` eligible stored bits (n weights, m eligible positions per weight:
    every bit of the format, or those of ``bits``), chosen uniformly without replacement with
    the cell's generator (:func:`~netperturb.perturb.faults.bits.choose_bits`), flipped by
    integer XOR on the bit pattern. The rate is per *eligible* bit (chosen): an
    exponent-only flip at rate r hits the exponent bits exactly as often as a whole-word flip
    at rate r does, so the two are comparable directly.

    Options: ``format`` (fp32 | fp16 | bf16 | int8), ``bits`` (all | sign | exponent |
    mantissa | list of indices, 0 = least significant), ``granularity`` (int8 scale per
    ``tensor`` or per output ``channel``), ``include_bias`` (biases hit too, in a separate
    draw after the weights', per-tensor scale).

    A flip may give Inf or NaN (an exponent of all ones): that is a result, not an error.
    Source: the single / multiple bit-flip weight fault model of PyTorchFI (Mahmoud et al.
    2020) and TensorFI2 (Narayanan et al. 2022), with an exact count per cell instead of a
    per-bit coin flip.
    """

    name = "bit_flip"

    def _combine(self, patterns, masks):
        return patterns ^ masks


class StuckAt(StuckValue, _BitFault):
    """Stuck-at bits at rate r: the same selection as :class:`BitFlip`, each chosen bit
    forced to ``value`` (0 or 1); a chosen bit that already holds ``value`` is unchanged.
    Source: the stuck-at fault model of memory cells (e.g. Reagen et al. 2018, Ares)."""

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
