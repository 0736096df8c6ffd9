"""Filtering scores and classes (fragile / robust / antifragile) of Pravin et al. 2024, and the
selection for selective retraining.

**Filtering scores** (:func:`filtering_scores`, one curve: :func:`rob_value`). Pravin et al.
define three scores per parameter group from (i) the clean curve, (ii) the adversarial curve
and (iii) their difference, each the integral of a normalised performance curve against
normalised alpha compared with a baseline. Two definitions are implemented, chosen with
``pravin2024.score.normalise`` and ``pravin2024.score.baseline``:

The authors' (default; ``normalise: first_point``, ``baseline: density``), as ``rob_value`` in
their notebook ``model_trainer (rob value).ipynb`` (github.com/SynapFilter/InferLink):

- each curve is divided by its own first sweep point: ``c = og / og[0]``, ``a = adv / adv[0]``;
- alpha is min-max normalised to [0, 1]; we use the sweep position ``t = i / (S - 1)``
  (:func:`netperturb.perturb.filters.alpha_grid`), which is the same for the evenly spaced
  thresholds of ``low`` and ``pulse``. For ``high`` the authors' thresholds run from max to
  min, so ``normalise_x(alpha)`` would run from 1 to 0 and flip the sign of Simpson's
  integral; we integrate in sweep order (their plotting script also passes
  ``linspace(0, 1, 25)``);
- the baseline curve is ``dens_bar = 1 - density / max_dens`` with ``density`` the number of
  weights the filter removed at each point (their notebook: "the number of parameters
  filtered ... for all thresholds"; their sweeps store ``count_zero`` of the filtered
  weights). ``dens_bar`` itself is not defined in the trainer notebook (``rob_value`` reads a
  global); their plotting script defines it as above with ``max_dens`` passed in. We take
  ``max_dens = n_weights``, the size of the filtered group (the layer, or every filtered
  layer in whole-network mode), so ``dens_bar(t) = 1 - n_filtered(t) / n_weights`` is **the
  fraction of the group's weights remaining** at each point. For the step filters this is
  also the largest count of the sweep (their last point zeroes every weight), so the two
  readings of ``max_dens`` agree; for ``pulse`` they differ and ours is *chosen*;
- ``clean = simpson(c - dens_bar, t)``, ``adversarial = simpson(a - dens_bar, t)``,
  ``difference = simpson(a - c, t)`` (their ``integrate(b_ - a_, alpha_)``: the baseline
  cancels). Their ``scipy.integrate.simps`` with ``even='avg'`` equals
  :func:`scipy.integrate.simpson` for an odd number of points (S = 25).

So a group scores 0 when its accuracy falls exactly as its weights are removed, > 0 when the
accuracy holds up better than the fraction of weights left, < 0 when worse.

Ours (``normalise: clean``, ``baseline: constant``; the default before the authors' code was
read): accuracies divided by ``A_c``, the clean top-1 of the *unfiltered* network at that
checkpoint, and the baseline the unfiltered network's own (constant) value: ``1`` for clean,
``A_a / A_c`` for adversarial (``A_a`` the unfiltered adversarial accuracy at the same eps),
``(A_a - A_c) / A_c`` for the difference. Any combination may be chosen; in general the
normalisers are ``n_c, n_a`` (first points or ``A_c``), ``constant`` is
``A_c / n_c, A_a / n_a`` and the difference baseline is the adversarial minus the clean one.

In every case ``difference = adversarial - clean`` (by linearity), so a positive score is the
better outcome for all three. A score below ``-tolerance`` classes the group *fragile*, above
``+tolerance`` *antifragile*, otherwise *robust* (Pravin et al. 2024: performance changed
negatively, invariantly, positively).

**Selective retraining** (:func:`retraining_selection` picks the layers,
:func:`freeze_for_retraining` freezes the rest, :func:`netperturb.studies.pravin2024.jobs.retrain`
runs it): only the parameters of the selected layers (weight and bias, and with ``include_bn``
the affine terms and running statistics of the BatchNorm fed directly by the layer) are
trained; every other parameter has ``requires_grad=False`` and is left out of the optimiser,
and every other BatchNorm stays in ``eval()`` mode, so all of them - running statistics
included - are bit-for-bit unchanged.

Source: C. Pravin, I. Martino, G. Nicosia, V. Ojha, Artificial Intelligence 327 (2024) 104060,
arXiv 2312.09821; github.com/SynapFilter/InferLink.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from torch import nn

from netperturb.core.layers import LayerInfo
from netperturb.perturb.filters import FILTERS
from netperturb.studies.pravin2024.intervals import classify, classify_interval, curve_credits, score_replicates

__all__ = ["SCORE_COLUMNS", "SCORES", "CLASSES", "NORMALISE", "BASELINE", "filtering_score", "rob_value",
           "filtering_scores", "retraining_selection", "freeze_for_retraining"]  # fmt: skip


#: Columns of the score table (one row per group and score).
SCORE_COLUMNS = [
    "study", "dataset", "model", "arch", "init", "epoch", "mode", "layer", "layer_label", "layer_index",
    "perturbation", "filter", "score", "value", "lo", "hi", "interval", "n_images", "class", "class_point",
    "tolerance", "n_points", "metric", "baseline_clean", "baseline_adversarial", "normalise", "baseline",
]  # fmt: skip
#: ``lo, hi``: the percentile bootstrap interval of ``value`` over the evaluation images
#: (:mod:`netperturb.studies.pravin2024.intervals`; NaN without per-image credits or with
#: ``n_boot = 0``); ``class``: the class the interval allows (``undetermined`` when it reaches
#: into a neighbouring class; the class of ``value`` when there is no interval);
#: ``class_point``: the class of ``value`` alone (the paper's rule).

SCORES = ("clean", "adversarial", "difference")
CLASSES = ("fragile", "robust", "antifragile")
#: ``score.normalise``: each curve by its own first point (the authors') or both by the unfiltered clean accuracy.
NORMALISE = ("first_point", "clean")
#: ``score.baseline``: the fraction of weights remaining (the authors') or the unfiltered network's value.
BASELINE = ("density", "constant")


# ---------------------------------------------------------------------------------------------
# scores


def filtering_score(positions: Sequence[float], curve: Sequence[float], baseline: float | Sequence[float]) -> float:
    """``scipy.integrate.simpson(curve - baseline, x=positions)``.

    Args:
        positions: increasing x values (normalised alpha in [0, 1]), at least 2.
        curve: normalised performance at each position.
        baseline: constant or per-position baseline curve.

    Returns:
        The signed area between the curve and the baseline (NaN if any value is NaN).

    Raises:
        ValueError: fewer than 2 points, mismatched lengths or non-increasing positions.
    """
    from scipy.integrate import simpson

    x = np.asarray(positions, dtype=np.float64)
    yv = np.asarray(curve, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if x.ndim != 1 or x.shape != yv.shape or len(x) < 2:
        raise ValueError(f"need >= 2 matching points, got positions {x.shape} and curve {yv.shape}")
    if np.any(np.diff(x) <= 0):
        raise ValueError("positions must be strictly increasing")
    if np.isnan(yv).any():
        return math.nan
    return float(simpson(yv, x=x))


def rob_value(
    og: Sequence[float], adv: Sequence[float], n_filtered: Sequence[float], n_weights: float, positions: Sequence[float]
) -> tuple[float, float, float]:
    """The authors' three filtering scores of one sweep (``rob_value`` of their notebook
    ``model_trainer (rob value).ipynb``, SynapFilter/InferLink), with ``dens_bar`` the
    fraction of weights remaining (module docstring).

    Args:
        og, adv: clean and adversarial accuracy at each sweep point (fractions), length S.
        n_filtered: weights the filter removed at each point, length S.
        n_weights: weights in the filtered group (``max_dens``), > 0.
        positions: normalised alpha in [0, 1], strictly increasing, length S.

    Returns:
        ``(clean, adversarial, difference)`` = ``(simpson(og/og[0] - dens_bar, t),
        simpson(adv/adv[0] - dens_bar, t), simpson(adv/adv[0] - og/og[0], t))`` with
        ``dens_bar = 1 - n_filtered / n_weights``; NaN where a first point is 0.

    Raises:
        ValueError: mismatched lengths, fewer than 2 points, ``n_weights <= 0``.
    """
    og, adv = np.asarray(og, dtype=np.float64), np.asarray(adv, dtype=np.float64)
    if n_weights <= 0:
        raise ValueError(f"n_weights must be > 0, got {n_weights}")
    if og.shape != adv.shape or len(og) < 2:
        raise ValueError(f"need >= 2 matching clean and adversarial points, got {og.shape} and {adv.shape}")
    dens_bar = 1.0 - np.asarray(n_filtered, dtype=np.float64) / float(n_weights)
    c = og / og[0] if og[0] > 0 else np.full_like(og, math.nan)
    a = adv / adv[0] if adv[0] > 0 else np.full_like(adv, math.nan)
    return (filtering_score(positions, c, dens_bar), filtering_score(positions, a, dens_bar),
            filtering_score(positions, a - c, 0.0))  # fmt: skip


def _curve_scores(
    t: np.ndarray, og: np.ndarray, adv: np.ndarray, remaining: np.ndarray, a_c: float, a_a: float,
    normalise: str, baseline: str,
) -> dict[str, float]:
    """The three scores of one curve under one definition (module docstring)."""
    if normalise == "first_point":
        n_c, n_a = og[0], adv[0]
    else:
        n_c = n_a = a_c
    n_c = n_c if n_c > 0 else math.nan
    n_a = n_a if n_a > 0 else math.nan
    c, a = og / n_c, adv / n_a
    if baseline == "density":
        base_c = base_a = remaining
    else:
        base_c, base_a = a_c / n_c, a_a / n_a
    return {"clean": filtering_score(t, c, base_c), "adversarial": filtering_score(t, a, base_a),
            "difference": filtering_score(t, a - c, np.asarray(base_a) - np.asarray(base_c))}  # fmt: skip


_GROUP = ["study", "dataset", "model", "arch", "init", "epoch", "mode", "layer", "layer_label", "layer_index", "perturbation"]


def filtering_scores(
    sweeps: pd.DataFrame,
    baselines: pd.DataFrame,
    *,
    tolerance: float = 0.05,
    metric: str = "top1",
    normalise: str = "first_point",
    baseline: str = "density",
    n_boot: int = 0,
    ci: float = 0.95,
    seed: int = 0,
    return_replicates: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, dict]:
    """The three filtering scores of every (model, init, epoch, mode, layer, filter) curve,
    with a percentile bootstrap interval over the evaluation images when ``n_boot > 0``
    (:mod:`netperturb.studies.pravin2024.intervals`: the same ``n_boot`` resamples of the
    images, from ``seed``, for every curve and both of its data sets; needs the per-image
    credits of the sweep table, ``top1_images`` / ``top5_images``).

    Args:
        sweeps: tidy sweep table (:data:`SWEEP_COLUMNS`, ``data`` clean and adversarial;
            ``n_filtered`` and ``n_weights`` are needed for ``baseline="density"``).
        baselines: the unfiltered networks' rows (``mode == "none"``), one clean and one
            adversarial row per (model, init, epoch) and attack budget (``eps``, when both
            tables have that column: a curve takes the baseline made at its own eps). Only
            ``baseline="constant"`` and ``normalise="clean"`` read them.
        tolerance: half-width of the *robust* band (score units, see module docstring).
        metric: ``top1`` or ``top5``.
        normalise: :data:`NORMALISE` (``pravin2024.score.normalise``).
        baseline: :data:`BASELINE` (``pravin2024.score.baseline``).
        n_boot: image resamples of the interval (0: no interval, ``lo``/``hi`` NaN and
            ``class`` the class of the value).
        ci: coverage of the interval.
        seed: seed of the image resamples.
        return_replicates: also return the replicates, ``{(model, init, epoch, mode, layer,
            perturbation): {score: (n_boot,) array}}`` (for
            :func:`~netperturb.studies.pravin2024.intervals.pooled_scores`).

    Returns:
        :data:`SCORE_COLUMNS`, one row per curve and score (``clean``, ``adversarial``,
        ``difference``) (and the replicates, see ``return_replicates``).

    Raises:
        ValueError: unknown ``normalise`` / ``baseline``, a curve has no baseline, or its
            clean and adversarial points differ; ``n_boot > 0`` on a sweep table without
            per-image credits.
    """
    from netperturb.core.findings import percentile_interval, resample_counts

    if normalise not in NORMALISE:
        raise ValueError(f"score normalise {normalise!r} not in {NORMALISE}")
    if baseline not in BASELINE:
        raise ValueError(f"score baseline {baseline!r} not in {BASELINE}")
    by_eps = "eps" in sweeps.columns and "eps" in baselines.columns
    index = ["model", "init", "epoch"] + (["eps"] if by_eps else [])
    base = baselines.pivot_table(index=index, columns="data", values=metric, aggfunc="first")
    rows, replicates, counts_of = [], {}, {}
    interval = f"{ci:.0%} percentile bootstrap over evaluation images ({n_boot} resamples)" if n_boot > 0 else ""
    for key, g in sweeps.groupby(_GROUP, sort=True):
        rec = dict(zip(_GROUP, key))
        where = tuple(rec[k] for k in index[:3]) + ((float(g["eps"].iloc[0]),) if by_eps else ())
        try:
            a_c, a_a = (float(base.loc[where, d]) for d in ("clean", "adversarial"))
        except KeyError:
            eps_txt = f" eps {where[3]}" if by_eps else ""
            raise ValueError(f"no baseline for model {rec['model']} init {rec['init']} epoch {rec['epoch']}{eps_txt}") from None
        wide = g.pivot_table(index="position", columns="data", values=metric, aggfunc="first").sort_index()
        if wide[["clean", "adversarial"]].isna().any().any():
            raise ValueError(f"curve {rec}: clean and adversarial points do not match")
        t = wide.index.to_numpy()
        if baseline == "density":
            dens = g[g["data"] == "clean"].set_index("position").sort_index()
            remaining = 1.0 - dens["n_filtered"].to_numpy(dtype=np.float64) / dens["n_weights"].to_numpy(dtype=np.float64)
        else:
            remaining = np.full(len(t), math.nan)
        values = _curve_scores(t, wide["clean"].to_numpy(), wide["adversarial"].to_numpy(), remaining, a_c, a_a,
                               normalise, baseline)  # fmt: skip
        n_img = int(g["n_images"].iloc[0]) if "n_images" in g else 0
        bounds = {}
        if n_boot > 0:
            og, adv = curve_credits(g, "clean", metric), curve_credits(g, "adversarial", metric)
            if n_img not in counts_of:
                counts_of[n_img] = resample_counts(n_img, n_boot, seed).astype(float)
            w = counts_of[n_img]
            ac_b = aa_b = np.full(n_boot, math.nan)
            if normalise == "clean" or baseline == "constant":
                bsub = baselines.loc[(baselines[index] == pd.Series(dict(zip(index, where)))).all(axis=1)]
                ac_b, aa_b = (w @ curve_credits(bsub.assign(position=0.0), d, metric)[0] / n_img for d in ("clean", "adversarial"))
            reps = score_replicates(t, w @ og.T / n_img, w @ adv.T / n_img, remaining, ac_b, aa_b, normalise, baseline)
            replicates[tuple(rec[k] for k in ("model", "init", "epoch", "mode", "layer", "perturbation"))] = reps
            bounds = {k: tuple(float(x) for x in percentile_interval(v, ci)) for k, v in reps.items()}
        kind = next((k for k, cls in FILTERS.items() if cls.name == rec["perturbation"]), rec["perturbation"])
        for score, value in values.items():
            lo, hi = bounds.get(score, (math.nan, math.nan))
            point = classify(value, tolerance)
            rows.append({**rec, "filter": kind, "score": score, "value": value, "lo": lo, "hi": hi, "interval": interval,
                         "n_images": n_img, "class": classify_interval(lo, hi, tolerance) if n_boot > 0 else point,
                         "class_point": point, "tolerance": tolerance, "n_points": len(t), "metric": metric,
                         "baseline_clean": a_c, "baseline_adversarial": a_a, "normalise": normalise,
                         "baseline": baseline})  # fmt: skip
    out = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    return (out, replicates) if return_replicates else out


# ---------------------------------------------------------------------------------------------
# selective retraining


def retraining_selection(
    scores: pd.DataFrame,
    *,
    model: str,
    init: int,
    epoch: int,
    score: str = "adversarial",
    filter: str = "mean",
    tolerance: float = 0.05,
    select: Sequence[str] = ("robust", "antifragile"),
) -> pd.DataFrame:
    """Which layers (per-layer mode) selective retraining trains, for one checkpoint.

    A layer's value is its ``score`` under ``filter`` (``low``/``high``/``pulse``), or the mean
    over the filters swept (``mean``); it is selected when ``classify(value, tolerance)`` is
    in ``select``. (The paper retrains "the robust and antifragile parameters"; which filter's
    scores decide is our choice, configurable.)

    Returns:
        one row per layer: ``layer, layer_label, layer_index, value, class, selected``, in
        depth order.

    Raises:
        ValueError: no per-layer scores for that checkpoint, or unknown score / filter.
    """
    if score not in SCORES:
        raise ValueError(f"retraining score {score!r} not in {SCORES}")
    if filter != "mean" and filter not in FILTERS:
        raise ValueError(f"retraining filter {filter!r} not mean or one of {list(FILTERS)}")
    s = scores[(scores["model"] == model) & (scores["init"] == init) & (scores["epoch"] == epoch)
               & (scores["mode"] == "layer") & (scores["score"] == score)]  # fmt: skip
    if filter != "mean":
        s = s[s["filter"] == filter]
    if s.empty:
        raise ValueError(f"no per-layer {score} scores for model {model} init {init} epoch {epoch} (filter {filter})")
    out = s.groupby(["layer_index", "layer", "layer_label"], sort=True)["value"].mean().reset_index()
    out["class"] = [classify(v, tolerance) for v in out["value"]]
    out["selected"] = out["class"].isin(list(select))
    return out[["layer", "layer_label", "layer_index", "value", "class", "selected"]]


def freeze_for_retraining(
    model: nn.Module, layers: Sequence[LayerInfo], *, include_bn: bool = True
) -> tuple[list[str], list[nn.Module]]:
    """Make only the parameters of ``layers`` trainable, in place.

    Every parameter gets ``requires_grad=False`` except the weight and bias of each layer in
    ``layers`` and, with ``include_bn``, the affine terms of the BatchNorm fed directly by it
    (:attr:`LayerInfo.bn`); that BatchNorm also keeps training-mode running statistics.

    Returns:
        ``(trainable parameter names, frozen modules)``: the modules to keep in ``eval()``
        mode during training - every BatchNorm whose parameters are frozen (pass them to
        :func:`netperturb.core.training.train_classifier` as ``frozen_modules``), so that their
        running statistics stay bit-for-bit the same.
    """
    prefixes = set()
    for l in layers:
        prefixes.add(l.path)
        if include_bn and l.bn is not None:
            prefixes.add(l.bn)
    trainable = []
    for name, p in model.named_parameters():
        owner = name.rpartition(".")[0]
        p.requires_grad_(owner in prefixes)
        if owner in prefixes:
            trainable.append(name)
    frozen = [m for path, m in model.named_modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and path not in prefixes]  # fmt: skip
    return trainable, frozen
