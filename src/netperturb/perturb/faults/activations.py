"""Faults in a layer's output activations: bit flips, stuck-at bits, multiplicative noise.

The *output of a layer* is the tensor the next layer reads: the Conv2d / Linear output, or the
output of the BatchNorm that directly follows it (a fused conv + BN on an accelerator; the
tensor the fast engine hands from the replicated unit to the rest of the network). Values
are fp32 patterns.

``transient: true`` (a soft error in a datapath register): every image gets its own fault
pattern, drawn from a generator seeded with (cell seed, the image's index in the evaluation
set) (:func:`~netperturb.perturb.faults.bits.image_seed`), so the numbers do not depend on the
batch size or the job split. ``transient: false`` (a permanent fault in an activation buffer):
one pattern per cell, drawn from the cell's generator, applied to every image.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from netperturb.core.seeds import cell_generator
from netperturb.perturb.base import OUTPUT, Perturbation, n_chosen
from netperturb.perturb.faults.bits import (
    StuckValue,
    uniform53,
    binomial_quantile,
    bit_positions,
    check_count,
    choose_k_bits_many,
    combine_masks,
    from_bits,
    image_seed,
    to_bits,
)

__all__ = ["ActivationFault", "ActivationBitFlip", "ActivationStuckAt", "ActivationNoise", "ACTIVATION_FAULTS",
           "is_activation_fault"]  # fmt: skip


def is_activation_fault(perturbation: Perturbation) -> bool:
    """True for the faults that act on a layer's output instead of its parameters
    (``changes == "output"``)."""
    return perturbation.changes == OUTPUT


class ActivationFault(Perturbation):
    """Base class. Called on parameters it changes nothing (``{}``); the engine calls
    :meth:`apply_activation` on the layer's output instead."""

    changes = OUTPUT

    def __init__(self, transient: bool = True):
        self.transient = bool(transient)

    def options(self) -> dict[str, Any]:
        return {"transient": self.transient}

    def _apply(self, params, level, generator):
        return {}

    def apply_activation(self, y: Tensor, level: float, seed: int, index: Tensor) -> Tensor:
        """The faulty output.

        Args:
            y: the layer's clean output (B, ...) (any float dtype; computed in fp32).
            level: the fault level; 0 returns ``y`` unchanged.
            seed: the cell's seed (:func:`netperturb.core.seeds.cell_seed`).
            index: int64 (B,), each row's index in the evaluation set (transient faults).

        Returns:
            A new tensor of ``y``'s shape, dtype and device.
        """
        level = self.check_level(level)
        if level == 0 or y.shape[0] == 0:
            return y
        per_image = y[0].numel()
        if self.transient:
            gens = [cell_generator(image_seed(seed, int(i))) for i in index.tolist()]
        else:
            g = cell_generator(seed)
            gens = [g]
        flat = y.detach().float().reshape(y.shape[0], per_image).clone()
        with torch.no_grad():
            self._fault(flat, level, gens, per_image)
        return flat.reshape(y.shape).to(y.dtype)

    def _fault(self, flat: Tensor, level: float, gens: Sequence[torch.Generator], per_image: int) -> None:
        raise NotImplementedError


class _ActivationBits(ActivationFault):
    level_unit = "bit error rate (fraction of the eligible bits of the layer's output per image)"
    max_level = 1.0

    def __init__(
        self, bits: str | Sequence[int] = "all", transient: bool = True, format: str = "fp32", count: str = "binomial"
    ):
        super().__init__(transient)
        if format != "fp32":
            raise ValueError(f"format: {format!r}; allowed for activation faults: fp32")
        self.format = format
        self.bits = bits if isinstance(bits, str) else [int(b) for b in bits]
        self.positions = bit_positions("fp32", self.bits)
        self.count = check_count(count)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "bits": self.bits, "format": self.format, "count": self.count}

    def _combine(self, patterns: Tensor, masks: Tensor) -> Tensor:
        raise NotImplementedError

    def _counts(self, population: int, level: float, gens: Sequence[torch.Generator]) -> list[int]:
        """Bits hit per generator (image, or the cell): ``exact`` floor(level x population),
        ``binomial`` one Binomial(population, level) draw from each generator
        (:func:`~netperturb.perturb.faults.bits.n_faults`, vectorised over the generators)."""
        if self.count == "exact":
            return [n_chosen(level, population)] * len(gens)
        if level >= 1:
            return [population] * len(gens)
        u = [uniform53(g) for g in gens]
        return [int(k) for k in binomial_quantile(u, population, level)]

    def _fault(self, flat, level, gens, per_image):
        counts = self._counts(per_image * len(self.positions), level, gens)
        rows, idx, masks = choose_k_bits_many(per_image, self.positions, counts, gens)
        if not idx.numel():
            return
        # the bits of one value are distinct: OR their masks (one pass for every image)
        key, masks_t = combine_masks(rows * per_image + idx, masks)
        rows_t, idx_t = torch.div(key, per_image, rounding_mode="floor"), key % per_image
        rows_t, idx_t, masks_t = rows_t.to(flat.device), idx_t.to(flat.device), masks_t.to(flat.device)
        if not self.transient:  # one pattern for every image
            b = flat.shape[0]
            rows_t = torch.arange(b, device=flat.device).repeat_interleave(idx_t.numel())
            idx_t, masks_t = idx_t.repeat(b), masks_t.repeat(b)
        old = to_bits(flat[rows_t, idx_t], "fp32")
        flat[rows_t, idx_t] = from_bits(self._combine(old, masks_t), "fp32")


class ActivationBitFlip(_ActivationBits):
    """Bit flips in a layer's output at bit error rate r: per image (transient) or per cell
    (permanent), among the ``n * m`` eligible bits of the image's output values (n values, m
    positions, ``bits`` as for :class:`~netperturb.perturb.faults.weights.BitFlip`), a
    Binomial(n * m, r) number of bits (``count: binomial``, default: each bit flips
    independently with probability r) or exactly ``floor(r * n * m)`` (``count: exact``),
    chosen uniformly without replacement and flipped by XOR on the fp32 pattern.

    Sources: the per-bit error rate of the soft-error literature; MRFI's activation
    ``FloatRandomBitFlip`` (a Poisson number of values, one random bit each); PyTorchFI's
    neuron bit flip (``single_bit_flip_func``) flips one bit of an 8-bit quantized copy of
    the value instead, and TensorFI2's ``layer_outputs`` mode one random bit of each of a
    given number of output values."""

    name = "activation_bit_flip"

    def _combine(self, patterns, masks):
        return patterns ^ masks


class ActivationStuckAt(StuckValue, _ActivationBits):
    """Stuck-at bits in a layer's output: the selection of :class:`ActivationBitFlip` (``count``
    binomial or exact), each chosen bit forced to ``value`` (0 or 1)."""

    name = "activation_stuck_at"

    def __init__(self, value: int = 1, **options):
        super().__init__(**options)
        self._set_value(value)


class ActivationNoise(ActivationFault):
    """Multiplicative noise on a layer's output at level s: ``y' = y * (1 + N(0, s^2))``, one
    factor per value (per image when transient, one pattern for all images otherwise). Scale
    free, so the result does not depend on the batch (chosen; the activation analogue of
    :class:`~netperturb.perturb.faults.weights.MultiplicativeNoise`)."""

    name = "activation_noise"
    level_unit = "relative s.d. of the activation factor"
    max_level = math.inf

    def _fault(self, flat, level, gens, per_image):
        noise = torch.stack([torch.randn(per_image, generator=g, dtype=torch.float32) for g in gens])
        flat.mul_(1 + level * noise.to(flat.device))


ACTIVATION_FAULTS = {cls.name: cls for cls in (ActivationBitFlip, ActivationStuckAt, ActivationNoise)}
