"""Filtering scores and classes (fragile / robust / antifragile) of Pravin et al. 2024, and the
selection for selective retraining.

**Filtering scores** (:func:`filtering_scores`). The paper defines three scores per parameter
group from (i) the clean curve, (ii) the adversarial curve and (iii) their difference, each the
integral of a normalised performance curve against normalised alpha compared with a baseline;
the normalisation and baseline are not given in a form we could recover (and are undefined in
the authors' notebooks), so this is our definition:

- x axis: the sweep position ``t`` in [0, 1] (normalised alpha,
  :func:`netperturb.perturb.filters.alpha_grid`);
- accuracies are divided by ``A_c``, the clean top-1 accuracy of the *unfiltered* network at
  the same checkpoint (one normaliser for all three curves, so that an adversarial accuracy
  near 0 does not blow up);
- the baseline curve of each score is the unfiltered network's own value, a constant:
  ``1`` for clean, ``A_a / A_c`` for adversarial (``A_a`` = unfiltered adversarial accuracy),
  ``(A_a - A_c) / A_c`` for the difference ``adversarial - clean``;
- score = ``scipy.integrate.simpson(curve - baseline, x=t)``.

So ``f_clean = int (acc_c(t) - A_c) dt / A_c``, ``f_adv = int (acc_a(t) - A_a) dt / A_c`` and
``f_diff = f_adv - f_clean`` (by linearity): 0 means the filter leaves the performance as it
was (on average over the sweep), -1 the worst possible clean curve. A score below
``-tolerance`` classes the group *fragile*, above ``+tolerance`` *antifragile*, otherwise
*robust* (Pravin et al. 2024: performance changed negatively, invariantly, positively). The
difference is taken as ``adversarial - clean`` so that, as for the other two, a positive
score is the better outcome (the adversarial accuracy moves up relative to the clean one).

**Selective retraining** (:func:`retraining_selection` picks the layers,
:func:`freeze_for_retraining` freezes the rest, :func:`netperturb.studies.pravin2024.jobs.retrain`
runs it): only the parameters of the selected layers (weight and bias, and with ``include_bn``
the affine terms and running statistics of the BatchNorm fed directly by the layer) are
trained; every other parameter has ``requires_grad=False`` and is left out of the optimiser,
and every other BatchNorm stays in ``eval()`` mode, so all of them - running statistics
included - are bit-for-bit unchanged.

Source: C. Pravin, I. Martino, G. Nicosia, V. Ojha, Artificial Intelligence 327 (2024) 104060,
arXiv 2312.09821.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from torch import nn

from netperturb.core.layers import LayerInfo
from netperturb.perturb.filters import FILTERS

__all__ = ["SCORE_COLUMNS", "SCORES", "CLASSES", "filtering_score", "classify", "filtering_scores", "retraining_selection", "freeze_for_retraining"]


#: Columns of the score table (one row per group and score).
SCORE_COLUMNS = [
    "study", "dataset", "model", "arch", "init", "epoch", "mode", "layer", "layer_label", "layer_index",
    "perturbation", "filter", "score", "value", "class", "tolerance", "n_points", "metric",
    "baseline_clean", "baseline_adversarial",
]  # fmt: skip

SCORES = ("clean", "adversarial", "difference")
CLASSES = ("fragile", "robust", "antifragile")


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


_GROUP = ["study", "dataset", "model", "arch", "init", "epoch", "mode", "layer", "layer_label", "layer_index", "perturbation"]


def filtering_scores(
    sweeps: pd.DataFrame, baselines: pd.DataFrame, *, tolerance: float = 0.05, metric: str = "top1"
) -> pd.DataFrame:
    """The three filtering scores of every (model, init, epoch, mode, layer, filter) curve.

    Args:
        sweeps: tidy sweep table (:data:`SWEEP_COLUMNS`, ``data`` clean and adversarial).
        baselines: the unfiltered networks' rows (``mode == "none"``), one clean and one
            adversarial row per (model, init, epoch).
        tolerance: half-width of the *robust* band (score units, see module docstring).
        metric: ``top1`` or ``top5``.

    Returns:
        :data:`SCORE_COLUMNS`, one row per curve and score (``clean``, ``adversarial``,
        ``difference``).

    Raises:
        ValueError: a curve has no baseline, or its clean and adversarial points differ.
    """
    base = baselines.pivot_table(index=["model", "init", "epoch"], columns="data", values=metric, aggfunc="first")
    rows = []
    for key, g in sweeps.groupby(_GROUP, sort=True):
        rec = dict(zip(_GROUP, key))
        try:
            a_c, a_a = (float(base.loc[(rec["model"], rec["init"], rec["epoch"]), d]) for d in ("clean", "adversarial"))
        except KeyError:
            raise ValueError(f"no baseline for model {rec['model']} init {rec['init']} epoch {rec['epoch']}") from None
        wide = g.pivot_table(index="position", columns="data", values=metric, aggfunc="first").sort_index()
        if wide[["clean", "adversarial"]].isna().any().any():
            raise ValueError(f"curve {rec}: clean and adversarial points do not match")
        t = wide.index.to_numpy()
        norm = a_c if a_c > 0 else math.nan
        c = wide["clean"].to_numpy() / norm
        a = wide["adversarial"].to_numpy() / norm
        values = {
            "clean": filtering_score(t, c, 1.0),
            "adversarial": filtering_score(t, a, a_a / norm),
            "difference": filtering_score(t, a - c, a_a / norm - 1.0),
        }
        kind = next((k for k, cls in FILTERS.items() if cls.name == rec["perturbation"]), rec["perturbation"])
        for score, value in values.items():
            rows.append({**rec, "filter": kind, "score": score, "value": value, "class": classify(value, tolerance),
                         "tolerance": tolerance, "n_points": len(t), "metric": metric,
                         "baseline_clean": a_c, "baseline_adversarial": a_a})  # fmt: skip
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


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
