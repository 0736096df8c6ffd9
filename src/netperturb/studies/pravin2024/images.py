"""Per-image credit of every sweep point (Pravin et al. 2024 study): what the bootstrap over
evaluation images of the filtering scores resamples (:mod:`netperturb.studies.pravin2024.intervals`).

A sweep point's accuracy is a mean over the evaluation images of each image's top-k credit
(tie-aware, :func:`netperturb.core.evaluate.topk_credit_parts`: 1, 0, or ``p / q`` when the
true class ties with others at the top-k boundary). :class:`ImageCounts` is a
:class:`~netperturb.core.evaluate.Counts` that also keeps those credits, image by image, in
the order of the evaluation images; the sweep tables carry them as the text columns
``top1_images`` / ``top5_images`` (:func:`encode_credits`): exact, so
``decode_credits(...).mean()`` is the row's ``top1`` up to the last float rounding.

Encoding (chosen: compact and exact): ``"<hex>|<partials>"``: ``<hex>`` the images with full
credit as a bit string (``numpy.packbits``, big-endian, zero-padded to a whole byte) in hex;
``<partials>`` the images with a fractional credit as ``i:p/q`` joined by ``,``; every other
image has credit 0. 100 images take 25 hex characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from fractions import Fraction  # noqa: F401 (the annotations of the fields inherited from Counts)

import numpy as np
import torch
from torch import Tensor

from netperturb.core.evaluate import Counts, count_logits, topk_credit_parts

__all__ = ["ImageCounts", "image_counts", "encode_credits", "encode_fractions", "decode_credits", "counts_json", "counts_from_stored"]


@dataclass(eq=False)
class ImageCounts(Counts):
    """:class:`~netperturb.core.evaluate.Counts` plus every image's top-1 and top-5 credit as
    exact fractions ``(num, den)`` (int tensors on the CPU), batches in the order they were
    added (``+=`` keeps the order of the evaluation images when the batches come in order).
    Two are equal when their sums are and their per-image credits are, image by image."""

    credit1: list = field(default_factory=list)
    credit5: list = field(default_factory=list)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Counts):
            return NotImplemented
        if self.base() != (other.base() if isinstance(other, ImageCounts) else other):
            return False
        if not isinstance(other, ImageCounts):
            return True
        return all(_same(getattr(self, a), getattr(other, a)) for a in ("credit1", "credit5"))

    def __iadd__(self, other: Counts) -> "ImageCounts":
        super().__iadd__(other)
        if isinstance(other, ImageCounts):
            self.credit1 = self.credit1 + other.credit1
            self.credit5 = self.credit5 + other.credit5
        return self

    def credits(self, metric: str = "top1") -> np.ndarray:
        """(n,) float64 per-image credit of ``metric`` (``top1`` / ``top5``) in image order.

        Raises:
            ValueError: unknown metric, or credits not kept for every image.
        """
        if metric not in ("top1", "top5"):
            raise ValueError(f"metric must be top1 or top5, got {metric!r}")
        parts = self.credit1 if metric == "top1" else self.credit5
        if not parts:
            return np.zeros(0)
        num = torch.cat([p[0] for p in parts]).double().numpy()
        den = torch.cat([p[1] for p in parts]).double().numpy()
        if len(num) != self.n:
            raise ValueError(f"per-image credits kept for {len(num)} of {self.n} images")
        return num / den

    def base(self) -> Counts:
        """The plain :class:`~netperturb.core.evaluate.Counts` (sums only)."""
        return Counts(**{f.name: getattr(self, f.name) for f in fields(Counts)})


def _same(a: list, b: list) -> bool:
    """Whether two lists of (num, den) batches hold the same credits, image by image."""
    if not a or not b:
        return not a and not b
    cat = lambda parts, i: torch.cat([p[i] for p in parts]).long()  # noqa: E731
    na, da, nb, db = cat(a, 0), cat(a, 1), cat(b, 0), cat(b, 1)
    return na.shape == nb.shape and torch.equal(na * db, nb * da)  # the same fractions, image by image


def image_counts(logits: Tensor, labels: Tensor) -> ImageCounts:
    """:func:`~netperturb.core.evaluate.count_logits` of one batch (logits (B, C), labels (B,))
    plus the per-image top-1 and top-5 credit (``k = min(5, C)``)."""
    c = count_logits(logits, labels)
    k5 = min(5, logits.shape[1])
    n1, d1 = topk_credit_parts(logits, labels, 1)
    n5, d5 = topk_credit_parts(logits, labels, k5)
    out = ImageCounts(**{f.name: getattr(c, f.name) for f in fields(Counts)})
    out.credit1 = [(n1.detach().cpu(), d1.detach().cpu())]
    out.credit5 = [(n5.detach().cpu(), d5.detach().cpu())]
    return out


def encode_credits(counts: Counts, metric: str = "top1") -> str:
    """The per-image credit of ``metric`` as text (module docstring); "" for plain
    :class:`Counts` (no per-image credit kept)."""
    if not isinstance(counts, ImageCounts):
        return ""
    parts = counts.credit1 if metric == "top1" else counts.credit5
    if not parts:
        return ""
    return encode_fractions(torch.cat([p[0] for p in parts]).long().numpy(), torch.cat([p[1] for p in parts]).long().numpy())


def encode_fractions(num: np.ndarray, den: np.ndarray) -> str:
    """Per-image credits ``num / den`` ((n,) ints, ``0 <= num <= den``, ``den >= 1``) as text
    (module docstring)."""
    num, den = np.asarray(num, dtype=np.int64), np.asarray(den, dtype=np.int64)
    full = num == den
    partial = np.flatnonzero((num > 0) & (num < den))
    return np.packbits(full).tobytes().hex() + "|" + ",".join(f"{i}:{num[i]}/{den[i]}" for i in partial)


def decode_credits(text: str, n: int) -> np.ndarray:
    """(n,) float64 per-image credits of :func:`encode_credits`' text for ``n`` images.

    Raises:
        ValueError: empty or malformed text (e.g. a sweep table written before per-image
            credits were kept: rerun its sweep jobs).
    """
    if not isinstance(text, str) or "|" not in text:
        raise ValueError(f"no per-image credits in {str(text)[:40]!r}: a sweep table from before netperturb kept them "
                         "(rerun the pravin2024 sweep jobs)")  # fmt: skip
    hexbits, partials = text.split("|", 1)
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(hexbits), dtype=np.uint8))
    if len(bits) < n:
        raise ValueError(f"per-image credits for {len(bits)} images, expected {n}")
    out = bits[:n].astype(np.float64)
    for item in filter(None, partials.split(",")):
        i, frac = item.split(":")
        p, q = frac.split("/")
        out[int(i)] = int(p) / int(q)
    return out


def counts_json(counts: Counts) -> dict:
    """What a sweep point's counts are stored as for cell-level resume: the sums
    (:func:`netperturb.core.resume.counts_to_json`) and, for :class:`ImageCounts`, the encoded
    per-image credits (``images``)."""
    from netperturb.core.resume import counts_to_json

    base = counts.base() if isinstance(counts, ImageCounts) else counts
    out = counts_to_json(base)
    if isinstance(counts, ImageCounts):
        out["images"] = {"n": counts.n, "top1": encode_credits(counts, "top1"), "top5": encode_credits(counts, "top5")}
    return out


def counts_from_stored(data: dict) -> Counts:
    """The counts of :func:`counts_json` (an :class:`ImageCounts` when it kept per-image credits,
    with the same credits)."""
    from netperturb.core.resume import counts_from_json

    data = dict(data)
    images = data.pop("images", None)
    base = counts_from_json(data)
    if images is None:
        return base
    out = ImageCounts(**{f.name: getattr(base, f.name) for f in fields(Counts)})
    for metric, attr in (("top1", "credit1"), ("top5", "credit5")):
        text = images.get(metric, "")
        if text:
            v = decode_credits(text, int(images["n"]))
            num, den = _fraction_parts(v, text, int(images["n"]))
            setattr(out, attr, [(num, den)])
    return out


def _fraction_parts(values: np.ndarray, text: str, n: int) -> tuple[Tensor, Tensor]:
    """(num, den) int32 tensors of decoded credits, exact (the partial fractions re-read)."""
    num = torch.from_numpy((values == 1).astype(np.int32))
    den = torch.ones(n, dtype=torch.int32)
    partials = text.split("|", 1)[1]
    for item in filter(None, partials.split(",")):
        i, frac = item.split(":")
        p, q = frac.split("/")
        num[int(i)], den[int(i)] = int(p), int(q)
    return num, den
