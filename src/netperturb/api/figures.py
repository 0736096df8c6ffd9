"""The figure of a grid: :func:`plot_grid` (a metric against level, one line per layer)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["plot_grid", "METRIC_LABELS"]

#: Axis label of each metric column of a grid table.
METRIC_LABELS = {
    "top1": "top-1 accuracy", "top5": "top-5 accuracy", "loss": "cross-entropy (nats)",
    "sdc1": "SDC rate (top-1)", "sdc5": "SDC rate (top-5)", "due": "DUE rate",
}  # fmt: skip


def plot_grid(
    df: pd.DataFrame,
    metric: str = "top1",
    *,
    perturbations: Sequence[str] | None = None,
    baseline: float | None = None,
    chance: float | None = None,
    log_x: bool | None = None,
):
    """``metric`` against level for a :func:`netperturb.run_grid` table (or a workflow
    table of :data:`netperturb.perturb.grid.COLUMNS`): one panel per perturbation, one line
    per layer (coloured by depth) with the mean over repeats and a band of +- one standard
    error of the mean (ddof = 1; no band for one repeat), as in Cheney et al. 2017, Fig. 1.

    Args:
        df: one model's rows (several models: the first is shown; filter first).
        metric: a column: ``top1``, ``top5``, ``loss``, ``sdc1``, ``sdc5``, ``due``.
        perturbations: which panels, in order (default: every perturbation of ``df``).
        baseline: a dotted horizontal line (e.g. the clean network's top-1).
        chance: a dashed horizontal line (e.g. 1 / classes).
        log_x: log-scaled level axis (default: when a panel's positive levels span more than
            two decades, e.g. bit error rates); level 0 is then drawn at the left edge.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: an unknown metric column or perturbation, an empty table.
    """
    import matplotlib.pyplot as plt

    from netperturb.perturb.registry import LEVEL_LABELS, PERTURBATION_TITLES

    if metric not in df.columns:
        raise ValueError(f"metric {metric!r} is not a column; columns: {', '.join(df.columns)}")
    if df.empty:
        raise ValueError("plot_grid: the table is empty")
    sub = df[df["model"] == df["model"].iloc[0]] if "model" in df.columns else df
    perts = list(perturbations) if perturbations else list(dict.fromkeys(sub["perturbation"]))
    unknown = [p for p in perts if p not in set(sub["perturbation"])]
    if unknown:
        raise ValueError(f"perturbations: {unknown} not in the table; it has {sorted(set(sub['perturbation']))}")
    g = sub.groupby(["layer_index", "layer_label", "perturbation", "level"], sort=True)[metric]
    summ = g.agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else 0.0, n="count").reset_index()
    summ["sem"] = summ["sd"] / np.sqrt(summ["n"])
    layers = summ[["layer_index", "layer_label"]].drop_duplicates().sort_values("layer_index")
    cmap = plt.get_cmap("viridis")
    colours = {idx: cmap(i / max(len(layers) - 1, 1)) for i, idx in enumerate(layers["layer_index"])}
    fig, axes = plt.subplots(1, len(perts), figsize=(4.2 * len(perts), 3.6), squeeze=False)
    for ax, pert in zip(axes[0], perts):
        s_p = summ[summ["perturbation"] == pert]
        positive = s_p.loc[s_p["level"] > 0, "level"]
        use_log = log_x if log_x is not None else (len(positive) > 1 and positive.max() / positive.min() > 100)
        floor = positive.min() / 3 if use_log and len(positive) else None
        for _, lay in layers.iterrows():
            s = s_p[s_p["layer_index"] == lay["layer_index"]].sort_values("level")
            if s.empty:
                continue
            x = s["level"].where(s["level"] > 0, floor) if floor is not None else s["level"]
            c = colours[lay["layer_index"]]
            ax.plot(x, s["mean"], marker="o", ms=3, lw=1.5, color=c, label=lay["layer_label"])
            ax.fill_between(x, s["mean"] - s["sem"], s["mean"] + s["sem"], color=c, alpha=0.25, lw=0)
        if use_log:
            ax.set_xscale("log")
        if chance is not None:
            ax.axhline(chance, ls="--", color="0.4", lw=1, label="chance")
        if baseline is not None:
            ax.axhline(baseline, ls=":", color="0.6", lw=1, label="clean")
        ax.set_title(PERTURBATION_TITLES.get(pert, pert))
        ax.set_xlabel(LEVEL_LABELS.get(pert, "level"))
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="layer")
    fig.tight_layout()
    return fig
