"""Figures and tables of the Cheney et al. 2017 report: accuracy against level per layer, relative drop, rank-sum tests, the baseline check."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from netperturb.perturb.registry import LEVEL_LABELS, PERTURBATION_TITLES

__all__ = ["PERTURBATION_TITLES", "LEVEL_LABELS", "FULL_REMOVAL", "summarize", "relative_drop", "ranksum_level",
           "first_layer_ranksum", "baseline_check", "plot_accuracy_vs_level"]  # fmt: skip

#: Perturbations whose level is the fraction removed: at level 1 every weight (node) is gone,
#: so every repeat is the same network and a test between repeats has nothing to compare.
FULL_REMOVAL = ("synapse_knockout", "node_knockout")




def summarize(df: pd.DataFrame, metric: str = "top1", *, ci: float = 0.95, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean, s.d. (ddof = 1; 0 for a single repeat), s.e.m., count and a percentile bootstrap
    interval of the mean over repeats (``lo``, ``hi``: :func:`netperturb.core.findings.bootstrap_mean`,
    ``ci`` coverage, ``n_boot`` resamples, seeded) of ``metric``, per (model, layer,
    layer_label, layer_index, perturbation, level). Cells with the same number of repeats are
    bootstrapped together (one matrix product); a cell with one repeat, or with identical
    repeats (level 0, full knockout), gets ``lo == hi == mean``.

    Returns:
        columns ``model, layer, layer_label, layer_index, perturbation, level, mean, sd, n,
        sem, lo, hi``.
    """
    from netperturb.core.findings import bootstrap_mean

    keys = ["model", "layer", "layer_label", "layer_index", "perturbation", "level"]
    g = df.groupby(keys, sort=True)[metric]
    out = g.agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else 0.0, n="count").reset_index()
    out["sem"] = out["sd"] / np.sqrt(out["n"])
    out["lo"], out["hi"] = out["mean"].to_numpy(float), out["mean"].to_numpy(float)
    values = [v.to_numpy(float) for _, v in g]  # same order as ``out`` (both sorted by keys)
    for n in sorted(set(out["n"])):
        rows = np.flatnonzero(out["n"].to_numpy() == n)
        if n < 2:
            continue
        _, lo, hi = bootstrap_mean(np.stack([values[i] for i in rows]), n_boot=n_boot, ci=ci, seed=seed)
        out.loc[out.index[rows], "lo"], out.loc[out.index[rows], "hi"] = lo, hi
    return out


def _nearest_level(levels: np.ndarray, target: float) -> float:
    return float(levels[np.argmin(np.abs(levels - target))])


def relative_drop(
    df: pd.DataFrame, baselines: pd.DataFrame, level: float = 0.7, metric: str = "top1", *, ci: float = 0.95,
    n_boot: int = 2000, seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """Relative drop 1 - acc(level) / acc(clean) of the mean over repeats, per model,
    perturbation and layer, with a percentile bootstrap interval over repeats (the clean
    accuracy is one evaluation of the unperturbed network on the same images, a constant).
    Where ``level`` is not on a perturbation's grid, the nearest level is used and reported
    in ``level_used``.

    Args:
        df: tidy perturbation table (:data:`netperturb.perturb.grid.COLUMNS`).
        baselines: one row per model with ``model`` and ``metric``.
        ci, n_boot, seed: the interval (:func:`netperturb.core.findings.bootstrap_mean`).

    Returns:
        columns ``model, perturbation, layer, layer_label, layer_index, level_used,
        baseline, accuracy, accuracy_lo, accuracy_hi, n_repeats, relative_drop, drop_lo,
        drop_hi`` (drop bounds NaN when the clean accuracy is 0).
    """
    from netperturb.core.findings import bootstrap_mean

    base = baselines.set_index("model")[metric]
    rows = []
    for (model, pert), sub in df.groupby(["model", "perturbation"], sort=True):
        lv = _nearest_level(np.sort(sub["level"].unique()), level)
        at = sub[np.isclose(sub["level"], lv)]
        for (idx, layer, label), cell in at.groupby(["layer_index", "layer", "layer_label"]):
            v = cell[metric].to_numpy(float)
            acc, lo, hi = (float(x) for x in bootstrap_mean(v, n_boot=n_boot, ci=ci, seed=seed))
            b = float(base.loc[model])
            drop = (lambda a: 1 - a / b if b > 0 else np.nan)
            rows.append(
                {"model": model, "perturbation": pert, "layer": layer, "layer_label": label,
                 "layer_index": idx, "level_used": lv, "baseline": b, "accuracy": acc, "accuracy_lo": lo,
                 "accuracy_hi": hi, "n_repeats": len(v), "relative_drop": drop(acc), "drop_lo": drop(hi),
                 "drop_hi": drop(lo)}
            )  # fmt: skip
    out = pd.DataFrame(rows)
    return out.sort_values(["model", "perturbation", "layer_index"]).reset_index(drop=True) if len(out) else out


def ranksum_level(levels: Sequence[float], perturbation: str, level: float | None = None) -> float:
    """The level of a perturbation's grid at which the rank-sum tests are taken.

    ``level=None`` (the default, ``cheney2017.report.ranksum_level: null``): the highest level
    at which the repeats still differ -- for the knockouts (:data:`FULL_REMOVAL`) the highest
    level below 1 (at 1 every repeat is the all-zero layer, identical), for Gaussian noise the
    highest level. This is the authors' ``maxPerturbation`` in
    ``results/plotPerturbationPerformance.py`` of kreimanlab/neural_net_robustness (a
    hand-set constant: ``"2.00"`` for ``mutateGaussian``, the top of its grid; their knockout
    plots, ``results/plotKnockouts.py``, stop at 0.9). A knockout grid with no level in (0, 1)
    falls back to its highest level (the tests then come out ``tied``). A number: the grid
    level nearest to it.

    Args:
        levels: the grid's levels (any order, duplicates allowed).
        perturbation: its name (config key).
        level: the level asked for, or None.

    Returns:
        A level of the grid.

    Raises:
        ValueError: an empty grid.
    """
    lv = np.unique(np.asarray(levels, dtype=float))
    if lv.size == 0:
        raise ValueError(f"{perturbation}: no levels")
    if level is not None:
        return _nearest_level(lv, float(level))
    if perturbation in FULL_REMOVAL:
        below = lv[(lv > 0) & (lv < 1 - 1e-9)]
        return float(below.max()) if below.size else float(lv.max())
    return float(lv.max())


def first_layer_ranksum(df: pd.DataFrame, metric: str = "top1", level: float | None = None) -> pd.DataFrame:
    """Wilcoxon rank-sum test (``scipy.stats.ranksums``, two-sided) of the first perturbed
    layer's repeats against every other layer's, per model and perturbation, at the level of
    :func:`ranksum_level` (default: the highest level at which repeats differ; at full knockout
    every repeat is identical and every test is degenerate). The authors' analysis
    (Cheney et al. 2017, Sec. 3; ``results/plotPerturbationPerformance.py`` of
    kreimanlab/neural_net_robustness) tests repeats of layers against each other at their
    ``maxPerturbation``; they compare every pair of conv layers, we the first layer with every
    other (chosen: the paper's contrast is conv1 against the rest).

    Args:
        df: tidy perturbation table; ``metric``: ``top1`` or ``top5``.
        level: see :func:`ranksum_level` (None: the default rule; a number: nearest grid level).

    Returns:
        columns ``model, perturbation, level, first_layer, layer, layer_label,
        first_mean, layer_mean, statistic, p_value, n_first, n_layer, tied`` (``tied``: all
        repeats of both layers have one and the same value, so the test cannot tell them apart).
    """
    from scipy.stats import ranksums

    rows = []
    for (model, pert), sub in df.groupby(["model", "perturbation"], sort=True):
        top = ranksum_level(sub["level"].to_numpy(), str(pert), level)
        at = sub[np.isclose(sub["level"], top)]
        first_idx = at["layer_index"].min()
        first = at[at["layer_index"] == first_idx]
        a = first[metric].to_numpy()
        for (idx, layer, label), cell in at.groupby(["layer_index", "layer", "layer_label"]):
            if idx == first_idx:
                continue
            b = cell[metric].to_numpy()
            stat, p = ranksums(a, b)
            rows.append(
                {"model": model, "perturbation": pert, "level": top,
                 "first_layer": first["layer_label"].iloc[0], "layer": layer, "layer_label": label,
                 "first_mean": a.mean(), "layer_mean": b.mean(), "statistic": stat, "p_value": p,
                 "n_first": len(a), "n_layer": len(b), "tied": bool(np.unique(np.concatenate([a, b])).size == 1)}
            )  # fmt: skip
    cols = ["model", "perturbation", "level", "first_layer", "layer", "layer_label", "first_mean", "layer_mean",
            "statistic", "p_value", "n_first", "n_layer", "tied"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)  # no rows when one layer per model was perturbed


def baseline_check(baselines: pd.DataFrame, tolerance_points: float = 0.5) -> pd.DataFrame:
    """Clean accuracy of every model with torchvision weights against torchvision's published
    ImageNet-1K numbers (``weights.meta["_metrics"]``; AlexNet IMAGENET1K_V1 56.522 / 79.066,
    VGG16 71.592 / 90.382 top-1 / top-5 %).

    A difference above ``tolerance_points`` percentage points in top-1 or top-5 is
    flagged: with the weights' own preprocessing on the full 50,000 images the numbers
    should agree to about 0.1 point, so a larger gap means wrong labels or preprocessing (or
    a subset of the images: ``n_images`` < 50,000 makes the check indicative only).

    Args:
        baselines: the baseline table (columns ``model, arch, weights, n_images, top1, top5``).

    Returns:
        one row per model that has published numbers: ``model, arch, weights, n_images,
        top1, top1_published, top5, top5_published, top1_diff, top5_diff`` (points, ours
        minus published), ``flagged``. Empty (same columns) when no model has any, e.g.
        models trained here.
    """
    from netperturb.models.weights import published_accuracy

    cols = ["model", "arch", "weights", "n_images", "top1", "top1_published", "top5", "top5_published",
            "top1_diff", "top5_diff", "flagged"]  # fmt: skip
    rows = []
    for _, r in baselines.iterrows():
        pub = published_accuracy(str(r["arch"]), str(r["weights"]))
        if pub is None:
            continue
        d1, d5 = 100 * (r["top1"] - pub["top1"]), 100 * (r["top5"] - pub["top5"])
        rows.append(
            {"model": r["model"], "arch": r["arch"], "weights": r["weights"], "n_images": int(r["n_images"]),
             "top1": r["top1"], "top1_published": pub["top1"], "top5": r["top5"], "top5_published": pub["top5"],
             "top1_diff": d1, "top5_diff": d5,
             "flagged": bool(not (abs(d1) <= tolerance_points and abs(d5) <= tolerance_points))}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def plot_accuracy_vs_level(
    df: pd.DataFrame,
    model: str,
    *,
    metric: str = "top1",
    chance: float | None = None,
    baseline: float | None = None,
    perturbations: Sequence[str] | None = None,
    palette: str = "viridis",
):
    """Cheney et al. 2017 Fig. 1 style: accuracy against level, one line per layer (colour
    by depth), the mean over repeats with its 95% percentile bootstrap interval over repeats
    as a band (:func:`summarize`), a dashed chance line; one panel per perturbation. Returns
    the matplotlib Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sub = df[df["model"] == model]
    perts = list(perturbations) if perturbations else sorted(sub["perturbation"].unique(), key=lambda p: list(PERTURBATION_TITLES).index(p) if p in PERTURBATION_TITLES else 99)
    summ = summarize(sub, metric)
    layers = summ.drop_duplicates("layer").sort_values("layer_index")
    colors = dict(zip(layers["layer"], sns.color_palette(palette, n_colors=len(layers))))
    fig, axes = plt.subplots(1, len(perts), figsize=(4.2 * len(perts), 3.6), sharey=True, squeeze=False)
    for ax, pert in zip(axes[0], perts):
        for _, lay in layers.iterrows():
            s = summ[(summ["perturbation"] == pert) & (summ["layer"] == lay["layer"])].sort_values("level")
            if s.empty:
                continue
            ax.plot(s["level"], s["mean"], marker="o", ms=3, lw=1.5, color=colors[lay["layer"]], label=lay["layer_label"])
            ax.fill_between(s["level"], s["lo"], s["hi"], color=colors[lay["layer"]], alpha=0.25, lw=0)
        if chance is not None:
            ax.axhline(chance, ls="--", color="0.4", lw=1, label="chance")
        if baseline is not None:
            ax.axhline(baseline, ls=":", color="0.6", lw=1, label="clean")
        ax.set_title(PERTURBATION_TITLES.get(pert, pert))
        ax.set_xlabel(LEVEL_LABELS.get(pert, "level"))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel({"top1": "top-1 accuracy", "top5": "top-5 accuracy"}.get(metric, metric))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="layer")
    fig.suptitle(f"{model}: {metric.replace('top', 'top-')} accuracy under internal perturbation")
    fig.tight_layout()
    return fig
