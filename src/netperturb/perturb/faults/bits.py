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
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from netperturb.perturb.base import _choose, n_chosen

__all__ = [
    "FORMATS", "BIT_GROUPS", "GRANULARITIES", "COUNTS", "Format", "bit_positions", "quantize_int8", "stored_int8",
    "check_stored", "check_count", "to_format", "to_bits", "from_bits", "n_faults", "binomial_quantile", "uniform53",
    "choose_k_bits", "choose_k_bits_many", "choose_bits", "image_seed", "StuckValue",
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


#: float32 machine epsilon (2**-23 ~ 1.19e-7): torch.ao's observers floor the scale at it.
_EPS = float(torch.finfo(torch.float32).eps)


def _abs_max(w: Tensor, granularity: str) -> Tensor:
    """max |w| over the tensor (shape ()) or per output channel (dim 0; shape (out, 1, ...))."""
    if granularity == "channel" and w.ndim >= 1:
        lo, hi = torch.aminmax(w.reshape(w.shape[0], -1), dim=1)
        shape = (-1, *([1] * (w.ndim - 1)))
        return torch.maximum(-torch.clamp(lo, max=0), torch.clamp(hi, min=0)).reshape(shape)
    lo, hi = torch.aminmax(w)
    return torch.maximum(-torch.clamp(lo, max=0), torch.clamp(hi, min=0))


def _codes(w: Tensor, scale: Tensor) -> Tensor:
    """int8 codes of float32 ``w`` at ``scale`` as torch quantizes: ``nearbyint(w * (1 / s))``
    in float32 (round half to even), clamped to [-127, 127]."""
    inv = torch.reciprocal(scale)
    return torch.clamp(torch.round(w * inv), -127, 127).to(torch.int8)


def quantize_int8(w: Tensor, granularity: str = "tensor") -> tuple[Tensor, Tensor]:
    """Symmetric int8 quantization, equal code for code (and scale for scale) to torch.ao's.

    ``s = max(max|w| / 127, eps)`` (float32; over the tensor, or per output channel = dim 0;
    ``eps`` = float32 machine epsilon 1.19e-7) and ``codes = clamp(nearbyint(w * (1 / s)),
    -127, 127)`` with ``1 / s`` and the product in float32: what
    ``torch.ao.quantization.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
    quant_min=-127, quant_max=127)`` (``PerChannelMinMaxObserver(ch_axis=0,
    qscheme=torch.per_channel_symmetric, ...)`` per channel) computes as its scale and
    ``torch.quantize_per_tensor`` / ``torch.quantize_per_channel`` as the codes
    (``int_repr()``); tests check both against torch.ao on random and real-shaped weights.
    The dequantized value of a code c is ``fl(c * s)``, as ``dequantize()`` gives it.

    Source: the symmetric ("scale only", zero point 0) scheme of Jacob et al. 2018 (CVPR,
    "Quantization and training of neural networks for efficient integer-arithmetic-only
    inference"), as torch.ao.quantization implements it (``observer.py``,
    ``UniformQuantizationObserverBase._calculate_qparams``; ATen ``quantize_val``). The
    restricted range [-127, 127] keeps negation from overflowing.

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
    scale = torch.clamp(_abs_max(w, granularity) / 127.0, min=_EPS)
    return _codes(w, scale), scale


def stored_int8(values: Tensor, granularity: str = "tensor", *, what: str = "weights") -> tuple[Tensor, Tensor]:
    """(codes, scale) of float32 ``values`` that are already int8-stored (dequantized:
    ``values == fl(codes * scale)`` bit for bit), the inverse of ``codes.float() * scale``.

    The scale of the stored values is recovered from them: the observer's scale of the values
    (:func:`quantize_int8`) or, when rounding moved it, the nearest of its float32 neighbours
    (up to 3 ulps either way) whose codes reproduce every value of the tensor (channel)
    exactly. So a fault acting on a quantized network (:func:`~netperturb.perturb.faults.weights.format_model`)
    flips the same codes torch.ao stored, and every value it does not hit keeps its bits.

    Raises:
        ValueError: the values are not int8-stored at that granularity (e.g. an fp32 network
            given to an int8 fault): the message says how many values are not a code times a
            scale and what to do.
    """
    v = values.detach().float()
    codes, s0 = quantize_int8(v, granularity)
    shape = (v.shape[0], -1) if granularity == "channel" and v.ndim >= 1 else (1, -1)

    def reproduces(c: Tensor, s: Tensor) -> Tensor:  # per channel: fl(c * s) == v for every value
        return ((c.float() * s).view(torch.int32) == v.view(torch.int32)).reshape(shape).all(1).reshape(s0.shape)

    found = reproduces(codes, s0)
    if bool(found.all()):
        return codes, s0
    chosen, up, down = s0.clone(), s0, s0
    for _ in range(3):
        up, down = torch.nextafter(up, torch.full_like(up, math.inf)), torch.nextafter(down, torch.zeros_like(down))
        for s in (up, down):
            ok = reproduces(_codes(v, s), s) & ~found
            chosen = torch.where(ok, s, chosen)
            found |= ok
        if bool(found.all()):
            return _codes(v, chosen), chosen
    bad = int(((_codes(v, s0).float() * s0).view(torch.int32) != v.view(torch.int32)).sum())
    raise ValueError(
        f"the {what} are not stored in int8 ({granularity} scale): {bad} of {v.numel()} values are not an int8 "
        f"code times the scale; apply an int8 fault to the network stored in int8 "
        f"(netperturb.perturb.faults.format_model(model, 'int8', {granularity!r}), the fault-free reference), "
        f"or use format: fp32"
    )


def check_stored(values: Tensor, fmt: str, granularity: str = "tensor", *, what: str = "weights") -> Tensor | None:
    """Check that float32 ``values`` are stored in ``fmt`` (their value is a ``fmt`` value:
    fp16 / bf16 representable, or an int8 code times a scale, :func:`stored_int8`); return the
    int8 scale (None for the float formats).

    Raises:
        ValueError: they are not (a fault in ``fmt`` would otherwise change every value when
            reading them into the format, silently); the message names the remedy.
    """
    check_format(fmt)
    if fmt == "fp32":
        return None
    if fmt == "int8":
        return stored_int8(values, granularity, what=what)[1]
    v = values.detach().float()
    bad = int((to_format(v, fmt).view(torch.int32) != v.view(torch.int32)).sum())
    if bad:
        raise ValueError(
            f"the {what} are not stored in {fmt}: {bad} of {v.numel()} values are not {fmt} values; apply an "
            f"{fmt} fault to the network stored in {fmt} (netperturb.perturb.faults.format_model(model, {fmt!r})), "
            f"or use format: fp32"
        )
    return None


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
    codes = torch.clamp(torch.round(values.float() * torch.reciprocal(scale)), -128, 127).to(torch.int64)  # a flip can make -128
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


#: :func:`_choose_sparse` drops repeats in Python up to this many indices.
_SMALL_K = 2048


def _oversample(need: int) -> int:
    """How many i.i.d. draws a round of sequential sampling takes when ``need`` more distinct
    indices are wanted (a few more than needed, so that one round is nearly always enough)."""
    return need + need // 8 + 8


def _choose_sparse(n: int, k: int, generator: torch.Generator) -> Tensor:
    """k distinct indices of range(n), uniformly without replacement, for k << n: i.i.d.
    uniform draws in order, repeats dropped, the first k distinct kept (sequential sampling
    without replacement; exact). Returns int64 (k,) in increasing order.

    Up to :data:`_SMALL_K` indices the repeats are dropped in Python (a set) instead of with
    tensor operations: the same draws from ``generator``, the same result, without the fixed
    cost of a dozen tensor operations (what the per-image draws of an activation fault pay)."""
    if k <= 0:
        return torch.empty(0, dtype=torch.int64)
    if k <= _SMALL_K:
        seen: set[int] = set()
        first: list[int] = []
        while len(first) < k:
            need = k - len(first)
            for v in torch.randint(0, n, (_oversample(need),), generator=generator, dtype=torch.int64).tolist():
                if v not in seen:
                    seen.add(v)
                    first.append(v)
        return torch.tensor(sorted(first[:k]), dtype=torch.int64)
    return _sparse_from(n, k, generator, torch.empty(0, dtype=torch.int64))


def _sparse_from(n: int, k: int, generator: torch.Generator, draws: Tensor) -> Tensor:
    """:func:`_choose_sparse` (tensor path) continued from the i.i.d. ``draws`` already taken
    from ``generator``: more rounds while fewer than k are distinct, then the first k distinct
    (in draw order), returned in increasing order.

    One stable sort of the draws per round does all of it: a draw is the first occurrence of
    its value where it differs from its predecessor in sorted order (a stable sort keeps the
    earliest draw of a value first), and the first k distinct values in draw order are the
    first occurrences drawn no later than the k-th of them, already in increasing order. (Before,
    two ``unique`` calls, a scatter and a final sort: for AlexNet fc6 at 1e-3, 1.2 M flips,
    129 ms per cell instead of 73 ms, one thread; the same indices.)"""
    if k <= 0:
        return torch.empty(0, dtype=torch.int64)
    while True:
        values, order = torch.sort(draws, stable=True)
        first = _new_value(values)
        need = k - int(first.sum())
        if need <= 0:
            break
        more = torch.randint(0, n, (_oversample(need),), generator=generator, dtype=torch.int64)
        draws = torch.cat([draws, more])
    when = order[first]  # the draw index of each distinct value's first occurrence, by value
    last = torch.kthvalue(when, k).values  # draw index of the k-th distinct value in draw order
    return values[first][when <= last]


def _new_value(sorted_values: Tensor) -> Tensor:
    """Bool mask (N,) of the entries of the sorted ``sorted_values`` (N,) that differ from
    their predecessor (the first entry always does)."""
    first = torch.ones(sorted_values.numel(), dtype=torch.bool)
    if sorted_values.numel() > 1:
        torch.ne(sorted_values[1:], sorted_values[:-1], out=first[1:])
    return first


def _first_occurrences(values: Tensor) -> Tensor:
    """Bool mask (N,) of the entries of the int64 ``values`` (N,) that are the first occurrence
    of their value: ``values[mask]`` are the distinct values in the order they first appear.
    (A stable sort keeps the earliest of equal values first.)"""
    sorted_values, order = torch.sort(values, stable=True)
    mask = torch.zeros(values.numel(), dtype=torch.bool)
    mask[order[_new_value(sorted_values)]] = True
    return mask


#: How many bits a fault hits at bit error rate r (``count:``): ``binomial`` (each eligible
#: bit independently with probability r; the field's BER, the default) or ``exact``
#: (exactly floor(r x eligible bits), netperturb 0.2's count).
COUNTS = ("binomial", "exact")


def check_count(count: str) -> str:
    """``count`` if it is one of :data:`COUNTS`.

    Raises:
        ValueError: otherwise (names the key and the allowed values).
    """
    if count not in COUNTS:
        raise ValueError(f"count: {count!r} unknown; allowed: {', '.join(COUNTS)}")
    return count


def uniform53(generator: torch.Generator) -> float:
    """One uniform number in (0, 1) with 53 random bits: ``(j + 0.5) / 2**53`` for
    ``j = randint(0, 2**53)`` from ``generator`` (advances it by one draw)."""
    j = int(torch.randint(0, 1 << 53, (1,), generator=generator, dtype=torch.int64))
    return (j + 0.5) / 2.0**53


def binomial_quantile(u, n: int, rate: float):
    """The smallest k with ``P(Binomial(n, rate) <= k) >= u`` (inversion of the binomial CDF,
    ``scipy.stats.binom.ppf``; Boost's incomplete beta function underneath): for u uniform in
    (0, 1) an exact Binomial(n, rate) draw up to double rounding of the CDF. ``u``: float or
    array; returns an int (or int64 array)."""
    from scipy.stats import binom

    k = binom.ppf(u, int(n), float(rate))
    return int(k) if np.ndim(k) == 0 else np.asarray(k, dtype=np.int64)


def n_faults(population: int, rate: float, count: str, generator: torch.Generator) -> int:
    """How many of ``population`` eligible bits a fault hits at bit error rate ``rate``.

    ``exact``: ``floor(rate * population)`` (:func:`~netperturb.perturb.base.n_chosen`; draws
    nothing). ``binomial``: a Binomial(population, rate) draw -- the number of successes when
    each bit flips independently with probability ``rate`` -- by inversion
    (:func:`binomial_quantile`) of one 53-bit uniform from ``generator``
    (:func:`uniform53`), so the count is a pure function of the cell's seed.

    Source: the bit error rate of the soft-error literature (each stored bit fails
    independently with probability BER; e.g. Reagen et al. 2018, "Ares", DAC, Sec. 3;
    MRFI's ``RandomPositionByRate`` draws a Poisson count of values, its limit for small r).
    """
    check_count(count)
    population = int(population)
    if rate <= 0 or population <= 0:
        return 0
    if count == "exact":
        return n_chosen(rate, population)
    if rate >= 1:
        return population
    return binomial_quantile(uniform53(generator), population, rate)


def choose_k_bits(n_values: int, positions: Sequence[int], k: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``k`` distinct (value, bit) pairs out of the ``n_values * len(positions)`` eligible ones,
    uniformly without replacement, from ``generator``.

    The sampler is :func:`netperturb.perturb.base._choose` (random-key k-subset) when k is at
    least 1/64 of the population, else exact sequential sampling with rejection of repeats
    (:func:`_choose_sparse`; memory O(k) instead of O(population), which a 37.7 M-weight layer
    x 32 bits needs).

    Returns:
        (value index int64 (k,), bit mask int64 (k,) = 1 << position), value-major order.
    """
    pos = torch.tensor(list(positions), dtype=torch.int64)
    population = int(n_values) * len(pos)
    k = min(int(k), population)
    if k * 64 >= population:
        flat = _choose(population, k, generator)
    else:
        flat = _choose_sparse(population, k, generator)
    return flat // len(pos), torch.bitwise_left_shift(torch.ones_like(flat), pos[flat % len(pos)])


def choose_k_bits_many(
    n_values: int, positions: Sequence[int], ks: Sequence[int], generators: Sequence[torch.Generator]
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`choose_k_bits` for many generators at once (one per image of a transient
    activation fault): for each r, ``ks[r]`` distinct (value, bit) pairs out of
    ``n_values * len(positions)`` from ``generators[r]``, the same pairs that
    ``choose_k_bits(n_values, positions, ks[r], generators[r])`` returns (each generator
    advances by the same draws).

    The sparse draws (k below 1/64 of the population) are taken per generator, but their
    repeats are dropped for every generator together (one ``unique`` over (r, index) keys
    instead of a Python loop over each image's draws); a generator whose first round of draws
    holds fewer than k distinct indices continues alone (:func:`_sparse_from`). The default
    run's activation-fault job (digit AlexNet, 540 images, 8 layers, 70 cells each) spent 45 of
    its 75 s drawing bits one image at a time.

    Returns:
        (row r int64 (K,), value index int64 (K,), bit mask int64 (K,)), K = sum of the ks
        (each capped at the population); the pairs of one row are in increasing order, the
        rows in no particular order.
    """
    pos = torch.tensor(list(positions), dtype=torch.int64)
    m = len(pos)
    population = int(n_values) * m
    rows: list[Tensor] = []
    flats: list[Tensor] = []
    batch: list[tuple[int, int, Tensor]] = []  # (row, k, first-round draws) of the sparse rows
    for r, (k, g) in enumerate(zip(ks, generators)):
        k = min(int(k), population)
        if k <= 0:
            continue
        if k * 64 >= population:
            flat = _choose(population, k, g)
        else:
            batch.append((r, k, torch.randint(0, population, (_oversample(k),), generator=g, dtype=torch.int64)))
            continue
        rows.append(torch.full_like(flat, r))
        flats.append(flat)
    if batch:
        lens = torch.tensor([d.numel() for _, _, d in batch])
        seg = torch.repeat_interleave(torch.arange(len(batch)), lens)
        keys = torch.cat([d for _, _, d in batch]) + seg * population
        is_first = _first_occurrences(keys)
        starts = torch.cumsum(lens, 0) - lens
        rank = torch.cumsum(is_first.long(), 0)  # distinct draws so far, over all rows
        before = torch.cat([torch.zeros(1, dtype=torch.int64), rank])[starts]  # ... before each row's first draw
        rank = rank - before[seg]
        need = torch.tensor([k for _, k, _ in batch])
        distinct = torch.zeros(len(batch), dtype=torch.int64).index_add_(0, seg, is_first.long())
        short = distinct < need
        keep = is_first & (rank <= need[seg]) & ~short[seg]
        kept = torch.sort(keys[keep]).values  # by row, then index: each row's pairs in increasing order
        kept_seg = torch.div(kept, population, rounding_mode="floor")
        row_of = torch.tensor([r for r, _, _ in batch])
        rows.append(row_of[kept_seg])
        flats.append(kept - kept_seg * population)
        for i in torch.nonzero(short).squeeze(1).tolist():  # rare: a repeat too many in the first round
            r, k, d = batch[i]
            flat = _sparse_from(population, k, generators[r], d)
            rows.append(torch.full_like(flat, r))
            flats.append(flat)
    if not flats:
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty, empty
    flat = torch.cat(flats)
    return torch.cat(rows), flat // m, torch.bitwise_left_shift(torch.ones_like(flat), pos[flat % m])


def choose_bits(
    n_values: int, positions: Sequence[int], rate: float, generator: torch.Generator, count: str = "exact"
) -> tuple[Tensor, Tensor]:
    """The (value, bit) pairs a fault at bit error rate ``rate`` hits: their number from
    :func:`n_faults` (``count``: ``binomial`` draws it from ``generator`` first; ``exact`` is
    ``floor(rate * n_values * len(positions))``), the pairs from :func:`choose_k_bits` (uniform
    without replacement, the same generator). ``count="exact"`` is netperturb 0.2's selection
    bit for bit.

    Returns:
        (value index int64 (k,), bit mask int64 (k,) = 1 << position), value-major order.
    """
    k = n_faults(int(n_values) * len(positions), rate, count, generator)
    return choose_k_bits(n_values, positions, k, generator)


def combine_masks(value_idx: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """(distinct value indices, OR of their bit masks): the bits of one value are distinct,
    so the sum of their masks is their OR."""
    if value_idx.numel() < 2 or bool(torch.all(value_idx[1:] >= value_idx[:-1])):  # the samplers' order
        uniq, inverse = torch.unique_consecutive(value_idx, return_inverse=True)
    else:
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
