"""Bootstrap intervals of the filtering scores of Pravin et al. 2024 over the evaluation images,
and the class of a score only where its interval allows one.

A filtering score is a function of two accuracy curves (clean, adversarial) over the sweep
(:mod:`netperturb.studies.pravin2024.scores`); every point of both curves is a mean over the
same evaluation images. The percentile bootstrap resamples those images with replacement
(the same resample for every point and both curves of a checkpoint: the images are paired),
recomputes both curves as means of the kept per-image credits
(:mod:`netperturb.studies.pravin2024.images`) and the score from them
(:func:`score_replicates`), ``n_boot`` times; the interval is the ``(1 - ci) / 2`` and
``(1 + ci) / 2`` quantiles (:func:`netperturb.core.findings.percentile_interval`). It covers the
sampling error of the evaluation images only: a rerun on other images of the same
distribution; not the training run (several initialisations: :func:`pooled_scores`).

Class with the interval (:func:`classify_interval`): *fragile* when the whole interval lies
below ``-tolerance``, *antifragile* when above ``+tolerance``, *robust* when inside
``[-tolerance, tolerance]``; otherwise *undetermined* (the interval reaches into a
neighbouring class). The paper's class of the point estimate stays in ``class_point``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from netperturb.core.findings import percentile_interval, resample_counts
from netperturb.studies.pravin2024.images import decode_credits

__all__ = ["classify", "classify_interval", "curve_credits", "score_replicates", "images_needed", "pooled_scores",
           "recovery_replicates", "images_table", "UNDETERMINED"]  # fmt: skip

UNDETERMINED = "undetermined"


def classify(value: float, tolerance: float) -> str:
    """``fragile`` if value < -tolerance, ``antifragile`` if value > tolerance, else
    ``robust``; ``undefined`` for NaN."""
    if value != value:
        return "undefined"
    if value < -tolerance:
        return "fragile"
    if value > tolerance:
        return "antifragile"
    return "robust"


def classify_interval(lo: float, hi: float, tolerance: float) -> str:
    """``fragile`` (hi < -tolerance), ``antifragile`` (lo > tolerance), ``robust`` (-tolerance
    <= lo and hi <= tolerance), else ``undetermined``; ``undefined`` when a bound is NaN."""
    if lo != lo or hi != hi:
        return "undefined"
    if hi < -tolerance:
        return "fragile"
    if lo > tolerance:
        return "antifragile"
    if lo >= -tolerance and hi <= tolerance:
        return "robust"
    return UNDETERMINED


def curve_credits(points: pd.DataFrame, data: str, metric: str = "top1") -> np.ndarray:
    """(S, N) per-image credits of one curve's points (rows of one ``data``, sorted by
    ``position``), decoded from ``<metric>_images``.

    Raises:
        ValueError: the table has no per-image credits (names the remedy), or points with
            different numbers of images.
    """
    rows = points[points["data"] == data].sort_values("position")
    col = f"{metric}_images"
    if col not in rows:
        raise ValueError(f"the sweep table has no {col!r} column: rerun the pravin2024 sweep jobs to keep per-image credits")
    return np.stack([decode_credits(t, int(n)) for t, n in zip(rows[col], rows["n_images"])])


def score_replicates(
    t: np.ndarray, og: np.ndarray, adv: np.ndarray, remaining: np.ndarray | None, a_c: np.ndarray, a_a: np.ndarray,
    normalise: str, baseline: str,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The three filtering scores for a stack of curves (the vectorised twin of the scalar
    definition in :mod:`netperturb.studies.pravin2024.scores`; the same formulas).

    Args:
        t: (S,) normalised alpha, increasing.
        og, adv: (B, S) clean and adversarial accuracy per curve.
        remaining: (S,) fraction of the group's weights still in place (``baseline="density"``).
        a_c, a_a: (B,) the unfiltered clean / adversarial accuracy (``normalise="clean"`` or
            ``baseline="constant"``; NaN otherwise).
        normalise, baseline: the score definition (``pravin2024.score``).

    Returns:
        ``{"clean", "adversarial", "difference"}``, each (B,) (NaN where a normaliser is 0).
    """
    from scipy.integrate import simpson

    og, adv = np.asarray(og, float), np.asarray(adv, float)
    if normalise == "first_point":
        n_c, n_a = og[:, :1], adv[:, :1]
    else:
        n_c = n_a = np.asarray(a_c, float)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        n_c = np.where(n_c > 0, n_c, np.nan)
        n_a = np.where(n_a > 0, n_a, np.nan)
        c, a = og / n_c, adv / n_a
        if baseline == "density":
            base_c = base_a = np.asarray(remaining, float)[None, :]
        else:
            base_c, base_a = np.asarray(a_c, float)[:, None] / n_c, np.asarray(a_a, float)[:, None] / n_a
    return {"clean": simpson(c - base_c, x=t, axis=-1), "adversarial": simpson(a - base_a, x=t, axis=-1),
            "difference": simpson((a - c) - (base_a - base_c), x=t, axis=-1)}  # fmt: skip


def images_needed(lo: float, hi: float, n_images: int, target_half_width: float) -> float:
    """Evaluation images that would bring an interval of half-width ``(hi - lo) / 2``,
    measured with ``n_images``, down to ``target_half_width``, by the ``1 / sqrt(n)`` law of a
    mean: ``n_images * ((hi - lo) / 2 / target)^2`` (a planning figure; the scores are smooth
    functions of means over images). NaN for a NaN bound."""
    if lo != lo or hi != hi or not target_half_width > 0:
        return math.nan
    return n_images * ((hi - lo) / 2 / target_half_width) ** 2


def images_table(scores: pd.DataFrame, tolerance: float, quantiles: Sequence[float] = (0.5, 0.9)) -> pd.DataFrame:
    """How many evaluation images the classes need, measured from the score intervals of this
    run: per mode and score, over the (layer, filter, checkpoint, initialisation) curves, the
    fraction classed ``undetermined``, the half-width ``(hi - lo) / 2`` of the intervals at
    their quantiles ``q``, and :func:`images_needed` for that half-width to equal the
    ``tolerance`` (the robust band is ``2 * tolerance`` wide, so a narrower interval can sit
    inside it or clear it).

    Returns:
        columns ``mode, score, n_curves, n_images, undetermined, half_width_q<q>,
        images_needed_q<q>`` for each ``q`` in ``quantiles`` (e.g. ``q50``, ``q90``).
    """
    rows = []
    for (mode, score), g in scores.groupby(["mode", "score"], sort=False):
        half = ((g["hi"] - g["lo"]) / 2).dropna()
        n = int(g["n_images"].iloc[0]) if len(g) else 0
        row = {"mode": mode, "score": score, "n_curves": len(g), "n_images": n,
               "undetermined": float((g["class"] == UNDETERMINED).mean()) if len(g) else math.nan}  # fmt: skip
        for q in quantiles:
            w = float(half.quantile(q)) if len(half) else math.nan
            row[f"half_width_q{int(round(q * 100))}"] = w
            row[f"images_needed_q{int(round(q * 100))}"] = images_needed(-w, w, n, tolerance)
        rows.append(row)
    return pd.DataFrame(rows)


def pooled_scores(
    scores: pd.DataFrame, replicates: dict[tuple, dict[str, np.ndarray]], *, tolerance: float, ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """The mean score over initialisations per (model, epoch, mode, layer, filter, score) with
    a two-stage percentile bootstrap interval: each resample draws the initialisations with
    replacement and, for each drawn one, its own image-bootstrap replicate of the same index
    (so both the training run and the evaluation images vary); one initialisation gives the
    image interval alone.

    Args:
        scores: the score table (:data:`~netperturb.studies.pravin2024.scores.SCORE_COLUMNS`).
        replicates: curve key ``(model, init, epoch, mode, layer, perturbation)`` -> score name
            -> (B,) image-bootstrap replicates (what :func:`~netperturb.studies.pravin2024.scores.filtering_scores`
            returns with ``return_replicates``).

    Returns:
        columns ``model, epoch, mode, layer, layer_label, layer_index, perturbation, filter,
        score, n_inits, value, lo, hi, class, class_point`` (without replicates: ``lo, hi``
        NaN and ``class`` the class of the value).
    """
    keys = ["model", "epoch", "mode", "layer", "layer_label", "layer_index", "perturbation", "filter", "score"]
    rows = []
    for key, g in scores.groupby(keys, sort=False):
        rec = dict(zip(keys, key))
        reps = [replicates.get((rec["model"], i, rec["epoch"], rec["mode"], rec["layer"], rec["perturbation"]), {})
                .get(rec["score"]) for i in g["init"]]  # fmt: skip
        value = float(g["value"].mean())
        if any(r is None for r in reps):
            lo = hi = math.nan
        else:
            r = np.stack(reps)  # (inits, B)
            n_i, b = r.shape
            pick = np.random.default_rng(seed).integers(0, n_i, size=(b, n_i))
            pooled = r[pick, np.arange(b)[:, None]].mean(1)
            lo, hi = (float(x) for x in percentile_interval(pooled, ci))
        rows.append({**rec, "n_inits": len(g), "value": value, "lo": lo, "hi": hi,
                     "class": classify_interval(lo, hi, tolerance) if lo == lo else classify(value, tolerance),
                     "class_point": classify(value, tolerance)})  # fmt: skip
    return pd.DataFrame(rows, columns=keys[:-1] + ["score", "n_inits", "value", "lo", "hi", "class", "class_point"])


def recovery_replicates(
    sweeps: pd.DataFrame, baseline: pd.DataFrame, *, model: str, epoch: int, layers: Sequence[str], metric: str = "top1",
    n_boot: int = 1000, seed: int = 0,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Image-bootstrap replicates of the recovery of each layer fully filtered (the last point
    of its ``filter_low`` sweep: every weight zero): clean accuracy with the layer filtered /
    the unfiltered clean accuracy, both means over the same resampled evaluation images
    (paired), averaged over the initialisations for each resample.

    Args:
        sweeps: the sweep table with per-image credits (``<metric>_images``).
        baseline: the unfiltered rows (those at the per-layer sweeps' eps), with per-image credits.
        layers: module paths.

    Returns:
        layer path -> (n_boot,) replicates (NaN where the unfiltered accuracy of a resample is 0).

    Raises:
        ValueError: no per-image credits, or a layer without a fully filtered point.
    """
    s = sweeps[(sweeps["model"] == model) & (sweeps["epoch"] == epoch) & (sweeps["mode"] == "layer")
               & (sweeps["perturbation"] == "filter_low") & (sweeps["data"] == "clean")]  # fmt: skip
    b = baseline[(baseline["model"] == model) & (baseline["epoch"] == epoch) & (baseline["data"] == "clean")]
    if "eps" in b and "eps" in s and len(s):
        b = b[b["eps"].isin(s["eps"].unique())]
    out: dict[str, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    for layer in layers:
        per_init = []
        for init, g in s[s["layer"] == layer].groupby("init", sort=True):
            last = g[g["position"] == g["position"].max()].assign(position=0.0)
            base = b[b["init"] == init].assign(position=0.0)
            if last.empty or base.empty:
                raise ValueError(f"no fully filtered point or no baseline for {model} epoch {epoch} layer {layer} init {init}")
            full, ref = curve_credits(last, "clean", metric)[0], curve_credits(base, "clean", metric)[0]
            n = len(full)
            if n not in counts:
                counts[n] = resample_counts(n, n_boot, seed).astype(float)
            with np.errstate(divide="ignore", invalid="ignore"):
                den = counts[n] @ ref
                per_init.append(np.where(den > 0, (counts[n] @ full) / den, np.nan))
        if not per_init:
            raise ValueError(f"no fully filtered point for {model} epoch {epoch} layer {layer}")
        out[layer] = np.mean(per_init, axis=0)
    return out
