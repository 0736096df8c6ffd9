"""Counter-based random draws: knockout masks and Gaussian noise as pure functions of a key and the element index.

Every random number a built-in weight perturbation uses (synapse / node knockout, Gaussian
noise) is ``splitmix64(key, i)``: the i-th output of Steele, Lea and Flood's SplitMix64 generator
(OOPSLA 2014; the finaliser of Java's ``SplittableRandom``) started at state ``key``, i.e.
``mix(key + (i + 1) * 0x9E3779B97F4A7C15 mod 2**64)``. It is integer arithmetic only
(wrapping add / multiply, xor, logical shift), so the CPU (NumPy uint64) and a GPU (torch int64
on the device) give the same 64 bits for every element, for any chunking of the index range.
This replaces the CPU ``torch.Generator`` streams of netperturb 0.1 (``randint`` keys, ``randn``
noise): the draws now run on the device of the layer and in time linear in its size, and the
numbers of a given seed changed with that (``netperturb_version`` 0.2.0).

A cell still has its CPU ``torch.Generator`` (:func:`netperturb.core.seeds.cell_generator`);
each draw of the cell takes one 62-bit *stream key* from it (:func:`stream_key`), so the
weight's and the bias's draws of a cell are independent streams, as before.

- :func:`choose_mask`: exactly k of n entries, uniformly without replacement (the k smallest
  63-bit keys, a tie going to the lower index): one pass that counts the keys below a band
  around the expected threshold and keeps the few keys inside it, then a sort of the band
  only (about 10 sqrt(n) keys); O(n), versus O(n log n) for ``randperm`` or a full sort.
- :func:`normal`: standard normal float32 by the Box--Muller transform of the key's two 32-bit
  halves in float64 (tails to 6.7 sd). ``log`` / ``cos`` / ``sqrt`` of float64 are the
  device's libraries', which may differ in the last float64 bit between CPU and CUDA; rounded to
  float32 that changes an element with probability about 2**-29 (a 37.7 M-weight layer: one
  element every ~15 draws, by one float32 ulp). Keys and masks are bit-identical everywhere.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["stream_key", "keys", "choose_mask", "normal"]

_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB
_M64 = (1 << 64) - 1
#: elements per chunk on the CPU (512 KiB of uint64: the working set stays in cache)
_CHUNK = 1 << 16
#: elements per chunk on a GPU (bounds the temporary memory of a draw)
_CHUNK_GPU = 1 << 24


def _i64(c: int) -> int:
    """The unsigned 64-bit constant ``c`` as the int64 with the same bits."""
    c &= _M64
    return c - (1 << 64) if c >= 1 << 63 else c


def stream_key(generator: torch.Generator) -> int:
    """One 62-bit key drawn from ``generator`` (a cell's CPU generator; advances it by one
    draw), the state of one counter-based stream."""
    return int(torch.randint(0, 1 << 62, (1,), generator=generator, dtype=torch.int64))


# ---------------------------------------------------------------------------------------------
# the bits


def _mix_np(z: np.ndarray, tmp: np.ndarray) -> None:
    """SplitMix64's finaliser on uint64 ``z`` in place (``tmp``: scratch of the same shape)."""
    np.right_shift(z, np.uint64(30), out=tmp)
    np.bitwise_xor(z, tmp, out=z)
    np.multiply(z, np.uint64(_C1), out=z)
    np.right_shift(z, np.uint64(27), out=tmp)
    np.bitwise_xor(z, tmp, out=z)
    np.multiply(z, np.uint64(_C2), out=z)
    np.right_shift(z, np.uint64(31), out=tmp)
    np.bitwise_xor(z, tmp, out=z)


def _bits_np(key: int, start: int, end: int, z: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """uint64 outputs ``start .. end-1`` of the stream ``key`` (NumPy, CPU) written into ``z``."""
    z = z[: end - start]
    tmp = tmp[: end - start]
    z[:] = np.arange(start + 1, end + 1, dtype=np.uint64)
    np.multiply(z, np.uint64(_GOLDEN), out=z)  # array x scalar uint64 wraps silently
    np.add(z, np.uint64(key & _M64), out=z)
    _mix_np(z, tmp)
    return z


def _lsr(z: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 ``z`` (torch's ``>>`` is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _bits_torch(key: int, start: int, end: int, device: torch.device) -> Tensor:
    """The same 64 bits as :func:`_bits_np`, as int64 on ``device`` (two's complement)."""
    z = torch.arange(start + 1, end + 1, dtype=torch.int64, device=device)
    z = z * _i64(_GOLDEN) + _i64(key)
    z = (z ^ _lsr(z, 30)) * _i64(_C1)
    z = (z ^ _lsr(z, 27)) * _i64(_C2)
    return z ^ _lsr(z, 31)


def _chunks(n: int, device: torch.device):
    size = _CHUNK if device.type == "cpu" else _CHUNK_GPU
    for start in range(0, n, size):
        yield start, min(n, start + size)


def keys(key: int, n: int, device: torch.device | str = "cpu", *, use_numpy: bool | None = None) -> Tensor:
    """The 63-bit sort keys of elements ``0 .. n-1`` of stream ``key``: int64 (n,) in
    [0, 2**63) on ``device`` (``splitmix64(key, i) >> 1``).

    ``use_numpy``: compute with NumPy (default on the CPU) or with torch int64 ops (default on
    other devices); both give the same values (tests check it), which is what makes a GPU's
    draws equal the CPU's.
    """
    device = torch.device(device)
    use_numpy = device.type == "cpu" if use_numpy is None else use_numpy
    if not use_numpy:
        return _lsr(_bits_torch(key, 0, n, device), 1)
    out = np.empty(n, dtype=np.uint64)
    tmp = np.empty(min(n, _CHUNK), dtype=np.uint64)
    for s, e in _chunks(n, torch.device("cpu")):
        _bits_np(key, s, e, out[s:e], tmp)
        np.right_shift(out[s:e], np.uint64(1), out=out[s:e])
    return torch.from_numpy(out.view(np.int64)).to(device)


# ---------------------------------------------------------------------------------------------
# exact k-subsets


def _band(n: int, k: int) -> tuple[int, int]:
    """[lo, hi): a range of 63-bit keys that holds the k-th smallest of n uniform keys except
    with probability < 1e-12 (+- 8 sd of the binomial count, plus 16 keys)."""
    q = k / n
    d = 8.0 * math.sqrt(q * (1 - q) / n) + 16.0 / n
    lo = max(0, math.floor((q - d) * 2.0**63))
    hi = min(1 << 63, math.ceil((q + d) * 2.0**63))
    return lo, hi


def choose_mask(n: int, k: int, key: int, device: torch.device | str = "cpu", *, use_numpy: bool | None = None) -> Tensor:
    """Exactly ``k`` of ``n`` entries, uniformly without replacement, as a bool mask.

    The chosen entries are those with the k smallest keys ``keys(key, n)`` (i.i.d. uniform 63-bit
    integers; a tie, probability ~ n**2 / 2**64, goes to the lower index): a uniform k-subset,
    the same on every device. Linear time: one pass counts the keys below a band [lo, hi)
    around the expected k-th key and collects the few keys inside it; only the band is sorted.
    If the k-th key falls outside the band (probability < 1e-12) the keys are sorted in full,
    with the same result.

    Args:
        n: population size (>= 0); k: how many to choose (<= 0: none; >= n: all).
        key: the stream key (:func:`stream_key`).
        device: where the mask is made and returned.
        use_numpy: the CPU code path (NumPy, chunked; default on the CPU) or the device one
            (torch int64 ops; default elsewhere); the same mask either way.

    Returns:
        bool tensor (n,) on ``device`` with exactly ``clamp(k, 0, n)`` True entries.

    Source: the Design page of the docs, "Seeds and draws"; synapse / node knockout of Cheney
    et al. 2017, Sec. 2.2 (a uniform random fraction of weights / units).
    """
    device = torch.device(device)
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=device)
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=device)
    lo, hi = _band(n, k)
    if (device.type == "cpu") if use_numpy is None else use_numpy:
        mask, below, band_idx, band_keys = _below_and_band_np(key, n, lo, hi)
    else:
        ks = keys(key, n, device, use_numpy=False)
        mask = ks < lo
        inside = (ks >= lo) & (ks < hi) if hi < 1 << 63 else ks >= lo
        band_idx = torch.nonzero(inside).squeeze(1)
        band_keys = ks[band_idx]
        below = int(mask.sum())
        del ks
    need = k - below
    if not 0 <= need <= band_keys.numel():  # the k-th key is outside the band: sort everything
        ks = keys(key, n, device)
        order = torch.sort(ks, stable=True).indices[:k]
        mask = torch.zeros(n, dtype=torch.bool, device=device)
        mask[order] = True
        return mask
    if need:
        order = torch.sort(band_keys, stable=True).indices[:need]  # band_idx is increasing: ties -> lower index
        mask[band_idx[order]] = True
    return mask


def _below_and_band_np(key: int, n: int, lo: int, hi: int) -> tuple[Tensor, int, Tensor, Tensor]:
    """CPU: (keys < lo as a bool mask (n,), how many, indices and keys of lo <= key < hi), in
    one chunked pass over the keys (never all n keys in memory at once)."""
    mask = np.empty(n, dtype=np.bool_)
    z = np.empty(min(n, _CHUNK), dtype=np.uint64)
    tmp = np.empty_like(z)
    inside = np.empty(len(z), dtype=np.bool_)
    lo_, hi_ = np.uint64(lo), np.uint64(min(hi, (1 << 63)))
    idx, ks, below = [], [], 0
    for s, e in _chunks(n, torch.device("cpu")):
        b = _bits_np(key, s, e, z, tmp)
        np.right_shift(b, np.uint64(1), out=b)
        np.less(b, lo_, out=mask[s:e])
        below += int(np.count_nonzero(mask[s:e]))
        m = inside[: e - s]
        np.less(b, hi_, out=m)
        np.not_equal(m, mask[s:e], out=m)  # lo <= key < hi  (key < lo implies key < hi)
        hit = np.flatnonzero(m)
        if hit.size:
            idx.append(hit + s)
            ks.append(b[hit].astype(np.int64))
    band_idx = torch.from_numpy(np.concatenate(idx)) if idx else torch.empty(0, dtype=torch.int64)
    band_keys = torch.from_numpy(np.concatenate(ks)) if ks else torch.empty(0, dtype=torch.int64)
    return torch.from_numpy(mask), below, band_idx, band_keys


# ---------------------------------------------------------------------------------------------
# Gaussian noise


def normal(
    key: int, shape: tuple[int, ...] | torch.Size, device: torch.device | str = "cpu", *, use_numpy: bool | None = None
) -> Tensor:
    """Standard normal float32 noise of ``shape`` on ``device``, by the Box--Muller transform.

    Elements 2j and 2j + 1 (row-major) are ``r cos(t)`` and ``r sin(t)`` with
    ``r = sqrt(-2 ln u1)``, ``t = 2 pi u2``, ``u1 = (h + 0.5) / 2**32``, ``u2 = l / 2**32``, where
    h and l are the high and low 32 bits of ``splitmix64(key, j)``; computed in float64 and
    rounded to float32 (module docstring: equal across devices up to the last-bit behaviour of
    float64 ``log`` / ``cos`` / ``sin``). ``use_numpy``: the CPU code path or the device one,
    as in :func:`choose_mask`.

    Source: G. E. P. Box and M. E. Muller, Ann. Math. Statist. 29 (1958) 610 (the transform).
    """
    device = torch.device(device)
    n = math.prod(shape)
    pairs = (n + 1) // 2
    out = torch.empty((pairs, 2), dtype=torch.float32, device=device)
    if (device.type == "cpu") if use_numpy is None else use_numpy:
        z = np.empty(min(pairs, _CHUNK), dtype=np.uint64)
        tmp = np.empty_like(z)
        for s, e in _chunks(pairs, torch.device("cpu")):
            b = _bits_np(key, s, e, z, tmp)
            # r in NumPy (its float64 log / sqrt are the faster ones on the CPU), the angle in torch
            r = np.right_shift(b, np.uint64(32)).astype(np.float64)
            r += 0.5
            r *= 2.0**-32
            np.log(r, out=r)
            r *= -2.0
            np.sqrt(r, out=r)
            theta = np.bitwise_and(b, np.uint64(0xFFFFFFFF)).astype(np.float64)
            theta *= 2.0**-32 * 2.0 * math.pi
            _polar(torch.from_numpy(r), torch.from_numpy(theta), out[s:e])
    else:
        for s, e in _chunks(pairs, device):
            b = _bits_torch(key, s, e, device)
            r = _lsr(b, 32).double().add_(0.5).mul_(2.0**-32).log_().mul_(-2.0).sqrt_()
            theta = (b & 0xFFFFFFFF).double().mul_(2.0**-32 * 2.0 * math.pi)
            _polar(r, theta, out[s:e])
    return out.view(-1)[:n].view(tuple(shape))


def _polar(r: Tensor, theta: Tensor, out: Tensor) -> None:
    """``out[:, 0], out[:, 1] = r cos(theta), r sin(theta)`` rounded to float32 (``r``,
    ``theta``: float64 (m,); ``theta`` is overwritten)."""
    out[:, 0] = torch.cos(theta).mul_(r)
    out[:, 1] = theta.sin_().mul_(r)
