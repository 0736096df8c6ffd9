"""Number formats, bit positions, symmetric int8 quantization and exact bit selection for the
hardware fault models (the Hardware faults page of the docs).

A stored value is a bit pattern of ``width`` bits, bit 0 the least significant:

========  =====  ====  ==========  =========
format    width  sign  exponent    mantissa
========  =====  ====  ==========  =========
fp32      32     31    23 .. 30    0 .. 22    (IEEE 754 binary32)
fp16      16     15    10 .. 14    0 .. 9     (IEEE 754 binary16)
bf16      16     15    7 .. 14     0 .. 6     (bfloat16)
int8      8      7     --          --         (two's complement code of symmetric quantization)
========  =====  ====  ==========  =========

Every pattern is handled as an unsigned int64 tensor (``to_bits`` / ``from_bits``), so flips
and stuck-at faults are integer XOR / OR / AND-NOT and never depend on float arithmetic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from netperturb.perturb.base import _choose, n_chosen

__all__ = [
    "FORMATS", "BIT_GROUPS", "GRANULARITIES", "Format", "bit_positions", "quantize_int8", "to_format",
    "to_bits", "from_bits", "choose_bits", "image_seed", "StuckValue",
]  # fmt: skip


@dataclass(frozen=True)
class Format:
    """A storage format: ``width`` bits and the positions of its sign / exponent / mantissa."""

    name: str
    width: int
    sign: tuple[int, ...]
    exponent: tuple[int, ...]
    mantissa: tuple[int, ...]


FORMATS: dict[str, Format] = {
    "fp32": Format("fp32", 32, (31,), tuple(range(23, 31)), tuple(range(0, 23))),
    "fp16": Format("fp16", 16, (15,), tuple(range(10, 15)), tuple(range(0, 10))),
    "bf16": Format("bf16", 16, (15,), tuple(range(7, 15)), tuple(range(0, 7))),
    "int8": Format("int8", 8, (7,), (), ()),
}
#: Named groups of bit positions (``bits:``); ``all`` is every bit of the format.
BIT_GROUPS = ("all", "sign", "exponent", "mantissa")
#: Scale granularity of int8 quantization: one scale per tensor, or per output channel (dim 0).
GRANULARITIES = ("tensor", "channel")


def check_format(fmt: str, key: str = "format") -> Format:
    """The :class:`Format` called ``fmt``.

    Raises:
        ValueError: unknown format (names ``key`` and the allowed values).
    """
    if fmt not in FORMATS:
        raise ValueError(f"{key}: {fmt!r} is not a format; allowed: {', '.join(FORMATS)}")
    return FORMATS[fmt]


def bit_positions(fmt: str, bits: str | Sequence[int] = "all", key: str = "bits") -> tuple[int, ...]:
    """The bit positions (0 = least significant) a fault may hit, in increasing order.

    Args:
        fmt: a key of :data:`FORMATS`.
        bits: ``"all"``, ``"sign"``, ``"exponent"``, ``"mantissa"``, or a list of distinct
            bit indices in [0, width).

    Raises:
        ValueError: unknown format or group, a group the format does not have (int8 has no
            exponent or mantissa), an index outside [0, width), duplicates, an empty list.
            The message names ``key`` and the allowed values.
    """
    f = check_format(fmt)
    if isinstance(bits, str):
        if bits not in BIT_GROUPS:
            raise ValueError(f"{key}: {bits!r} is not a bit group; allowed: {', '.join(BIT_GROUPS)} "
                             f"or a list of bit indices 0..{f.width - 1}")  # fmt: skip
        pos = tuple(range(f.width)) if bits == "all" else getattr(f, bits)
        if not pos:
            raise ValueError(f"{key}: {fmt} has no {bits} bits; allowed for {fmt}: all, sign or a list of bit "
                             f"indices 0..{f.width - 1}")  # fmt: skip
        return tuple(pos)
    pos = list(bits)
    bad = [b for b in pos if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < f.width]
    if bad or not pos:
        what = f"bit index {bad[0]!r} is outside 0..{f.width - 1}" if bad else "an empty list"
        raise ValueError(f"{key}: {what} for {fmt}; allowed: {', '.join(BIT_GROUPS)} or a list of distinct "
                         f"bit indices 0..{f.width - 1}")  # fmt: skip
    if len(set(pos)) != len(pos):
        raise ValueError(f"{key}: duplicate bit indices in {pos}")
    return tuple(sorted(pos))


def _snap_scale(scale: Tensor) -> Tensor:
    """The fixed point of s -> fl(fl(127 s) / 127) near ``scale`` (fp32), so that quantizing
    the dequantized weights again gives the same scale, codes and values (idempotent)."""
    s = scale
    for _ in range(8):
        nxt = (s * 127) / 127
        if torch.equal(nxt, s):
            break
        s = nxt
    return s


def quantize_int8(w: Tensor, granularity: str = "tensor") -> tuple[Tensor, Tensor]:
    """Symmetric int8 quantization: ``codes = clamp(round(w / s), -127, 127)`` with
    ``s = max|w| / 127`` over the tensor or per output channel (dim 0), snapped so that
    ``quantize_int8(codes * s)`` returns the same codes and scale (an all-zero slice gets s = 1).

    Source: the symmetric ("scale only", zero point 0) scheme of Jacob et al. 2018 /
    ``torch.ao.quantization``'s per-tensor and per-channel symmetric qint8 observers; the
    restricted range [-127, 127] is chosen so that negation never overflows.

    Args:
        w: float tensor (out, ...); granularity: ``"tensor"`` or ``"channel"``.

    Returns:
        (codes int8 of w's shape, scale fp32 broadcastable to w: () or (out, 1, ...)).

    Raises:
        ValueError: unknown granularity.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity: {granularity!r} unknown; allowed: {', '.join(GRANULARITIES)}")
    w = w.detach().float()
    if granularity == "channel" and w.ndim >= 1:
        amax = w.abs().reshape(w.shape[0], -1).amax(1).reshape(-1, *([1] * (w.ndim - 1)))
    else:
        amax = w.abs().amax()
    scale = _snap_scale(torch.where(amax > 0, amax / 127, torch.ones_like(amax)))
    codes = torch.clamp(torch.round(w / scale), -127, 127).to(torch.int8)
    return codes, scale


def to_format(w: Tensor, fmt: str, granularity: str = "tensor") -> Tensor:
    """``w`` (float32) stored in ``fmt`` and read back as float32: fp32 unchanged, fp16/bf16
    cast round trip, int8 quantize-dequantize (:func:`quantize_int8`). Idempotent."""
    check_format(fmt)
    if fmt == "fp32":
        return w
    if fmt == "int8":
        codes, scale = quantize_int8(w, granularity)
        return (codes.float() * scale).to(w.dtype)
    return w.to(torch.float16 if fmt == "fp16" else torch.bfloat16).to(w.dtype)


def to_bits(values: Tensor, fmt: str, scale: Tensor | None = None) -> Tensor:
    """Bit patterns (unsigned, int64) of float32 ``values`` stored in ``fmt``; int8 needs the
    quantization ``scale`` (broadcastable to ``values``)."""
    if fmt == "fp32":
        return values.float().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    if fmt in ("fp16", "bf16"):
        half = values.to(torch.float16 if fmt == "fp16" else torch.bfloat16)
        return half.view(torch.int16).to(torch.int64) & 0xFFFF
    codes = torch.clamp(torch.round(values.float() / scale), -128, 127).to(torch.int64)  # a flip can make -128
    return codes & 0xFF


def from_bits(patterns: Tensor, fmt: str, scale: Tensor | None = None) -> Tensor:
    """Inverse of :func:`to_bits`: float32 values of unsigned int64 ``patterns``."""
    width = FORMATS[fmt].width
    signed = torch.where(patterns >= (1 << (width - 1)), patterns - (1 << width), patterns)
    if fmt == "fp32":
        return signed.to(torch.int32).view(torch.float32)
    if fmt in ("fp16", "bf16"):
        return signed.to(torch.int16).view(torch.float16 if fmt == "fp16" else torch.bfloat16).float()
    return signed.float() * scale


def _choose_sparse(n: int, k: int, generator: torch.Generator) -> Tensor:
    """k distinct indices of range(n), uniformly without replacement, for k << n: i.i.d.
    uniform draws in order, repeats dropped, the first k distinct kept (sequential sampling
    without replacement; exact). Returns int64 (k,) in increasing order."""
    draws = torch.empty(0, dtype=torch.int64)
    while True:
        need = k - int(torch.unique(draws).numel())
        if need <= 0:
            break
        more = torch.randint(0, n, (need + need // 8 + 8,), generator=generator, dtype=torch.int64)
        draws = torch.cat([draws, more])
    uniq, inverse = torch.unique(draws, return_inverse=True)
    first = torch.full((uniq.numel(),), draws.numel(), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(draws.numel()), reduce="amin")
    keep = uniq[torch.argsort(first)[:k]]
    return torch.sort(keep).values


def choose_bits(
    n_values: int, positions: Sequence[int], rate: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Exactly ``k = floor(rate * n_values * len(positions))`` distinct (value, bit) pairs out
    of the ``n_values * len(positions)`` eligible ones, uniformly without replacement.

    The sampler is :func:`netperturb.perturb.base._choose` (the knockouts' random-key k-subset
    sampler) when k is at least 1/64 of the population, else exact sequential sampling with
    rejection of repeats (:func:`_choose_sparse`; memory O(k) instead of O(population), which
    a 37.7 M-weight layer x 32 bits needs). Both draw only from ``generator``.

    Returns:
        (value index int64 (k,), bit mask int64 (k,) = 1 << position), value-major order.
    """
    pos = torch.tensor(list(positions), dtype=torch.int64)
    population = int(n_values) * len(pos)
    k = n_chosen(rate, population)
    if k * 64 >= population:
        flat = _choose(population, k, generator)
    else:
        flat = _choose_sparse(population, k, generator)
    return flat // len(pos), torch.bitwise_left_shift(torch.ones_like(flat), pos[flat % len(pos)])


def combine_masks(value_idx: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """(distinct value indices, OR of their bit masks): the bits of one value are distinct,
    so the sum of their masks is their OR."""
    uniq, inverse = torch.unique(value_idx, return_inverse=True)
    out = torch.zeros(uniq.numel(), dtype=torch.int64).index_add_(0, inverse, masks)
    return uniq, out


def image_seed(seed: int, index: int) -> int:
    """Seed of one image of one cell (transient activation faults): the first 63 bits of
    sha256 over (cell seed, image index in the dataset), so an image's fault pattern does not
    depend on the batch it is in or on the job split."""
    digest = hashlib.sha256(f"{int(seed)}\x1f{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class StuckValue:
    """Mixin of the stuck-at faults (weights and activations): the ``value`` (0 or 1) the
    chosen bits are forced to; a chosen bit that already holds it is unchanged."""

    value: int

    def _set_value(self, value: int) -> None:
        if value not in (0, 1) or isinstance(value, bool):
            raise ValueError(f"value: {value!r}; allowed: 0, 1")
        self.value = int(value)

    def options(self) -> dict:
        return {**super().options(), "value": self.value}  # type: ignore[misc]

    def _combine(self, patterns: Tensor, masks: Tensor) -> Tensor:
        return patterns | masks if self.value else patterns & ~masks
