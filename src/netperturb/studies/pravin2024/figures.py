"""Figures and tables of the synaptic filtering study (Pravin et al. 2024).

Called by ``notebooks/pravin2024.ipynb``; kept here so they are testable. Inputs are the tidy
tables of :mod:`netperturb.studies.pravin2024.jobs`: sweeps
(:data:`~netperturb.studies.pravin2024.sweeps.SWEEP_COLUMNS`), scores
(:data:`~netperturb.studies.pravin2024.scores.SCORE_COLUMNS`) and retraining
(:data:`~netperturb.studies.pravin2024.jobs.RETRAIN_COLUMNS`). Values are means over initialisations.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd

from netperturb.studies.pravin2024.scores import CLASSES, SCORES, classify, filtering_scores

__all__ = [
    "FILTER_TITLES",
    "CLASS_COLORS",
    "MAP_CLASSES",
    "layer_role",
    "curve_means",
    "plot_layer_curves",
    "plot_layer_heatmap",
    "MANY_LAYERS",
    "plot_network_curves",
    "plot_score_heatmaps",
    "plot_class_maps",
    "full_filter_table",
    "class_table",
    "retraining_summary",
    "layers_by_class",
    "layer_baseline",
    "DEFINITIONS",
    "scores_by_definition",
    "definition_classes",
    "network_definition_table",
]

FILTER_TITLES = {"filter_low": "low (w <= alpha)", "filter_high": "high (w >= alpha)", "filter_pulse": "pulse (band at alpha)"}
CLASS_COLORS = {"fragile": "#d6604d", "robust": "#bababa", "antifragile": "#4393c3", "undetermined": "#f7f7f7"}
#: The classes of the maps and tables: the paper's three and "undetermined" (the interval reaches
#: into a neighbouring class, :func:`~netperturb.studies.pravin2024.intervals.classify_interval`).
MAP_CLASSES = (*CLASSES, "undetermined")


def layer_role(path: str, index: int) -> str:
    """A coarse role of a layer from its module path (torchvision naming): ``stem`` (the
    first layer), ``residual branch`` (``layerX.Y.convZ`` of ResNets), ``shortcut``
    (``downsample``), ``classifier`` (``fc`` / ``classifier``), else ``other``."""
    if index == 1:
        return "stem"
    if "downsample" in path:
        return "shortcut"
    if re.fullmatch(r"layer\d+\.\d+\.conv\d+", path):
        return "residual branch"
    if path == "fc" or path.startswith("classifier") or path.startswith("fc"):
        return "classifier"
    return "other"


def curve_means(sweeps: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """Mean and s.d. of ``metric`` over initialisations per (model, epoch, mode, layer,
    perturbation, position, data)."""
    keys = ["model", "epoch", "mode", "layer", "layer_label", "layer_index", "perturbation", "position", "data"]
    g = sweeps.groupby(keys, sort=True)[metric]
    return g.agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else 0.0, n="count").reset_index()


def _filters(df: pd.DataFrame) -> list[str]:
    return [f for f in FILTER_TITLES if f in set(df["perturbation"].unique())]


def plot_layer_curves(sweeps: pd.DataFrame, model: str, epoch: int, *, metric: str = "top1",
                      chance: float | None = None, baseline: pd.DataFrame | None = None, palette: str = "viridis"):
    """Per-layer mode at one checkpoint: accuracy against normalised alpha, one line per
    layer (colour by depth); rows = filters, columns = clean / adversarial data. Dotted
    lines: the unfiltered network. Returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sub = sweeps[(sweeps["model"] == model) & (sweeps["epoch"] == epoch) & (sweeps["mode"] == "layer")]
    m = curve_means(sub, metric)
    filters = _filters(sub)
    layers = m.drop_duplicates("layer").sort_values("layer_index")
    colors = dict(zip(layers["layer"], sns.color_palette(palette, n_colors=len(layers))))
    fig, axes = plt.subplots(len(filters), 2, figsize=(9.5, 3.0 * len(filters)), sharex=True, sharey=True, squeeze=False)
    for r, flt in enumerate(filters):
        for c, data in enumerate(("clean", "adversarial")):
            ax = axes[r][c]
            for _, lay in layers.iterrows():
                s = m[(m["perturbation"] == flt) & (m["layer"] == lay["layer"]) & (m["data"] == data)]
                ax.plot(s["position"], s["mean"], lw=1.2, color=colors[lay["layer"]], label=lay["layer_label"])
            if baseline is not None:
                b = layer_baseline(sub, baseline)
                b = b[(b["model"] == model) & (b["epoch"] == epoch) & (b["data"] == data)]
                if len(b):
                    ax.axhline(b[metric].mean(), ls=":", color="k", lw=1, label="unfiltered")
            if chance is not None:
                ax.axhline(chance, ls="--", color="0.5", lw=1, label="chance")
            ax.set_title(f"{FILTER_TITLES[flt]} - {data}", fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        axes[r][0].set_ylabel(f"{metric.replace('top', 'top-')} accuracy")
    for ax in axes[-1]:
        ax.set_xlabel("normalised alpha (sweep position)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="layer", fontsize=7, ncol=1 + len(labels) // 26)
    fig.suptitle(f"{model}, epoch {epoch}: per-layer synaptic filtering")
    fig.tight_layout()
    return fig


MANY_LAYERS = 10  # above this many layers, the per-layer sweeps are shown as a heat map


def plot_layer_heatmap(sweeps: pd.DataFrame, model: str, epoch: int, *, metric: str = "top1",
                       baseline: pd.DataFrame | None = None, cmap: str = "viridis"):
    """Per-layer mode at one checkpoint as a layer x level heat map, readable with many layers:
    rows = layers in depth order, columns = thresholds (sweep position t from "almost nothing
    removed" to "every weight removed"), colour = accuracy (mean over initialisations, 0 to 1);
    one panel per filter (rows) and data (clean / adversarial; columns). The unfiltered
    accuracy is given in each panel's title. Returns the Figure."""
    import matplotlib.pyplot as plt

    sub = sweeps[(sweeps["model"] == model) & (sweeps["epoch"] == epoch) & (sweeps["mode"] == "layer")]
    m = curve_means(sub, metric)
    filters = _filters(sub)
    n_layers = max(m["layer_index"].nunique(), 1)
    fig, axes = plt.subplots(len(filters), 2, figsize=(10, (0.16 * n_layers + 1.0) * len(filters) + 0.8),
                             sharex=True, squeeze=False, layout="constrained")  # fmt: skip
    image = None
    for r, flt in enumerate(filters):
        for c, data in enumerate(("clean", "adversarial")):
            ax = axes[r][c]
            s = m[(m["perturbation"] == flt) & (m["data"] == data)]
            wide = s.pivot_table(index=["layer_index", "layer_label"], columns="position", values="mean")
            pos = wide.columns.to_numpy(dtype=float)
            edges = np.concatenate([[pos[0] - 0.5 * (pos[1] - pos[0]) if len(pos) > 1 else pos[0] - 0.5],
                                    (pos[1:] + pos[:-1]) / 2,
                                    [pos[-1] + 0.5 * (pos[-1] - pos[-2]) if len(pos) > 1 else pos[-1] + 0.5]])  # fmt: skip
            image = ax.pcolormesh(edges, np.arange(len(wide.index) + 1), wide.to_numpy(dtype=float), cmap=cmap,
                                  vmin=0, vmax=1, shading="flat", rasterized=True)  # fmt: skip
            ax.set_yticks(np.arange(len(wide.index)) + 0.5, [lab for _, lab in wide.index], fontsize=6 if n_layers > 20 else 7)
            ax.invert_yaxis()  # the input side on top
            title = f"{FILTER_TITLES[flt]} - {data}"
            if baseline is not None:
                b = baseline[(baseline["model"] == model) & (baseline["epoch"] == epoch) & (baseline["data"] == data)]
                if len(b):
                    title += f" (unfiltered {b[metric].mean():.2f})"
            ax.set_title(title, fontsize=9)
        axes[r][0].set_ylabel("layer")
    for ax in axes[-1]:
        ax.set_xlabel("normalised alpha (sweep position)")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label=f"{metric.replace('top', 'top-')} accuracy")
    fig.suptitle(f"{model}, epoch {epoch}: per-layer synaptic filtering, accuracy per layer and threshold")
    return fig


def plot_network_curves(sweeps: pd.DataFrame, model: str, *, metric: str = "top1", chance: float | None = None):
    """Whole-network mode: accuracy against normalised alpha, one panel per filter, clean
    (solid) and adversarial (dashed) lines per checkpoint epoch. Returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sub = sweeps[(sweeps["model"] == model) & (sweeps["mode"] == "network")]
    m = curve_means(sub, metric)
    filters = _filters(sub)
    epochs = sorted(m["epoch"].unique())
    colors = dict(zip(epochs, sns.color_palette("rocket_r", n_colors=max(len(epochs), 1))))
    fig, axes = plt.subplots(1, max(len(filters), 1), figsize=(4.2 * max(len(filters), 1), 3.4), sharey=True, squeeze=False)
    for ax, flt in zip(axes[0], filters):
        for e in epochs:
            for data, ls in (("clean", "-"), ("adversarial", "--")):
                s = m[(m["perturbation"] == flt) & (m["epoch"] == e) & (m["data"] == data)]
                ax.plot(s["position"], s["mean"], ls=ls, color=colors[e], label=f"epoch {e} {data}")
        if chance is not None:
            ax.axhline(chance, ls=":", color="0.5", lw=1)
        ax.set_title(FILTER_TITLES[flt], fontsize=10)
        ax.set_xlabel("normalised alpha (shared grid)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric.replace('top', 'top-')} accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    fig.suptitle(f"{model}: whole-network synaptic filtering")
    fig.tight_layout()
    return fig


def _score_means(scores: pd.DataFrame, model: str) -> pd.DataFrame:
    s = scores[(scores["model"] == model) & (scores["mode"] == "layer")]
    return s.groupby(["perturbation", "score", "layer_index", "layer_label", "epoch"], sort=True)["value"].mean().reset_index()


def _below_title(fig, inches: float = 0.45) -> float:
    """Top of the panels' area (figure fraction) that leaves ``inches`` for the suptitle
    (tight_layout alone lets a tall figure's panel titles run into it)."""
    return 1 - inches / fig.get_figheight()


def _score_panel(fig, ax, wide: pd.DataFrame, vmax: float, *, colorbar: bool) -> None:
    """One panel of :func:`plot_score_heatmaps`: ``wide`` (rows = layers, columns = epochs) as
    a diverging colour map centred on 0 (``RdBu``, -vmax .. vmax), each cell annotated with its
    value (up to 6 columns) in black or white by the cell colour's luminance, row and column
    labels at the cell centres. Matplotlib directly: seaborn's ``heatmap`` draws the whole
    figure once per panel to check its tick labels (7 of the 11 s the 9-panel figure took)."""
    import matplotlib as mpl

    values = wide.to_numpy(dtype=float)
    cmap = mpl.colormaps["RdBu"]
    norm = mpl.colors.Normalize(vmin=-vmax, vmax=vmax)
    mesh = ax.pcolormesh(values, cmap=cmap, norm=norm, rasterized=True)
    ax.set_xlim(0, values.shape[1])
    ax.set_ylim(values.shape[0], 0)  # first row (input side) on top
    ax.set_xticks(np.arange(values.shape[1]) + 0.5, [str(c) for c in wide.columns])
    ax.set_yticks(np.arange(values.shape[0]) + 0.5, [str(i) for i in wide.index])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if values.shape[1] <= 6:
        rgba = cmap(norm(values))
        lum = 0.2126 * rgba[..., 0] + 0.7152 * rgba[..., 1] + 0.0722 * rgba[..., 2]
        for i, j in zip(*np.nonzero(np.isfinite(values))):
            ax.text(j + 0.5, i + 0.5, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if lum[i, j] > 0.408 else "white")  # fmt: skip
    if colorbar:
        fig.colorbar(mesh, ax=ax, label="filtering score")


def plot_score_heatmaps(scores: pd.DataFrame, model: str, *, tolerance: float | None = None):
    """Filtering scores, layer (rows, depth order) x checkpoint epoch (columns); one panel per
    filter (rows) and score (columns); diverging colours centred on 0. Returns the Figure."""
    import matplotlib.pyplot as plt

    m = _score_means(scores, model)
    filters = _filters(m)
    vmax = max(float(np.nanmax(np.abs(m["value"]))) if len(m) else 1.0, 1e-6)
    n_layers = m["layer_index"].nunique()
    fig, axes = plt.subplots(len(filters), 3, figsize=(3.4 * 3 + 1.5, 0.22 * n_layers * len(filters) + 1.6 * len(filters)),
                             squeeze=False)  # fmt: skip
    for r, flt in enumerate(filters):
        for c, score in enumerate(SCORES):
            s = m[(m["perturbation"] == flt) & (m["score"] == score)]
            wide = s.pivot_table(index=["layer_index", "layer_label"], columns="epoch", values="value")
            wide.index = [lab for _, lab in wide.index]
            _score_panel(fig, axes[r][c], wide, vmax, colorbar=c == 2)
            axes[r][c].set_title(f"{FILTER_TITLES[flt]}: {score}", fontsize=9)
            axes[r][c].set_xlabel("epoch")
            axes[r][c].tick_params(axis="y", labelsize=7)
    fig.suptitle(f"{model}: filtering scores (mean over initialisations)"
                 + (f"; robust band +/- {tolerance:g}" if tolerance is not None else ""))  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, _below_title(fig)))
    return fig


def class_table(scores: pd.DataFrame, model: str, tolerance: float) -> pd.DataFrame:
    """Class per (filter, score, layer, epoch) of the per-layer mode: from the pooled table of
    :func:`~netperturb.studies.pravin2024.intervals.pooled_scores` (a ``n_inits`` column: the
    mean over initialisations with its interval; ``class`` may be ``undetermined``,
    ``class_point`` is the class of the value alone), else the class of the mean score over
    initialisations (no interval).

    Returns:
        columns ``perturbation, score, layer_index, layer_label, epoch, value, class`` (and
        ``lo, hi, class_point, n_inits`` from a pooled table).
    """
    if "n_inits" in scores:
        s = scores[(scores["model"] == model) & (scores["mode"] == "layer")]
        cols = ["perturbation", "score", "layer_index", "layer_label", "epoch", "value", "lo", "hi", "class", "class_point",
                "n_inits"]  # fmt: skip
        return s[cols].sort_values(["perturbation", "score", "layer_index", "epoch"]).reset_index(drop=True)
    m = _score_means(scores, model)
    m["class"] = [classify(v, tolerance) for v in m["value"]]
    return m


def plot_class_maps(scores: pd.DataFrame, model: str, tolerance: float):
    """Classes (fragile / robust / antifragile) as categorical maps, laid out as
    :func:`plot_score_heatmaps`. Returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    m = class_table(scores, model, tolerance)
    filters = _filters(m)
    shown = MAP_CLASSES if (m["class"] == "undetermined").any() else CLASSES
    code = {c: i for i, c in enumerate(shown)}
    cmap = ListedColormap([CLASS_COLORS[c] for c in shown])
    n_layers = m["layer_index"].nunique()
    fig, axes = plt.subplots(len(filters), 3, figsize=(3.2 * 3, 0.22 * n_layers * len(filters) + 1.6 * len(filters)),
                             squeeze=False)  # fmt: skip
    for r, flt in enumerate(filters):
        for c, score in enumerate(SCORES):
            s = m[(m["perturbation"] == flt) & (m["score"] == score)].copy()
            s["code"] = s["class"].map(code)
            wide = s.pivot_table(index=["layer_index", "layer_label"], columns="epoch", values="code")
            ax = axes[r][c]
            ax.imshow(wide.to_numpy(dtype=float), cmap=cmap, vmin=-0.5, vmax=len(shown) - 0.5, aspect="auto",
                      interpolation="nearest")  # fmt: skip
            ax.set_yticks(range(len(wide.index)), [lab for _, lab in wide.index], fontsize=7)
            ax.set_xticks(range(len(wide.columns)), [str(e) for e in wide.columns])
            ax.set_xlabel("epoch")
            ax.set_title(f"{FILTER_TITLES[flt]}: {score}", fontsize=9)
    fig.legend([Patch(facecolor=CLASS_COLORS[c], edgecolor="0.6") for c in shown], shown, loc="lower center",
               ncol=len(shown), frameon=False, bbox_to_anchor=(0.5, -0.01))  # fmt: skip
    fig.suptitle(f"{model}: classes (tolerance {tolerance:g})"
                 + ("; a class only where the interval over images excludes its neighbours" if "lo" in m else ""))  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, _below_title(fig)))
    return fig


def full_filter_table(
    sweeps: pd.DataFrame, baseline: pd.DataFrame, *, metric: str = "top1", n_boot: int = 0, ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """Accuracy with a layer fully filtered (every weight zeroed: the last point of the low
    filter's sweep) against the unfiltered network, per model, epoch and layer (mean over
    initialisations), with :func:`layer_role`; with ``n_boot > 0`` a percentile bootstrap
    interval of the recovery over the evaluation images
    (:func:`~netperturb.studies.pravin2024.intervals.recovery_replicates`).

    Returns:
        columns ``model, epoch, layer, layer_label, layer_index, role, clean, adversarial,
        unfiltered_clean, unfiltered_adversarial, recovery`` (``clean / unfiltered_clean``),
        ``n_images``, ``recovery_lo, recovery_hi`` (NaN without an interval).
    """
    s = sweeps[(sweeps["mode"] == "layer") & (sweeps["perturbation"] == "filter_low")]
    s = s[s["position"] == s.groupby(["model", "epoch", "layer"])["position"].transform("max")]
    wide = s.pivot_table(index=["model", "epoch", "layer", "layer_label", "layer_index"], columns="data",
                         values=metric, aggfunc="mean").reset_index()  # fmt: skip
    b = layer_baseline(sweeps, baseline).pivot_table(index=["model", "epoch"], columns="data", values=metric, aggfunc="mean")
    b.columns = [f"unfiltered_{c}" for c in b.columns]
    out = wide.merge(b.reset_index(), on=["model", "epoch"], how="left")
    out.insert(5, "role", [layer_role(p, i) for p, i in zip(out["layer"], out["layer_index"])])
    out["recovery"] = out["clean"] / out["unfiltered_clean"]
    out["n_images"] = int(s["n_images"].iloc[0]) if len(s) and "n_images" in s else 0
    out["recovery_lo"] = out["recovery_hi"] = np.nan
    if n_boot > 0:
        from netperturb.core.findings import percentile_interval
        from netperturb.studies.pravin2024.intervals import recovery_replicates

        base = layer_baseline(sweeps, baseline)
        for (model, epoch), g in out.groupby(["model", "epoch"]):
            reps = recovery_replicates(sweeps, base, model=model, epoch=int(epoch), layers=list(g["layer"]), metric=metric,
                                       n_boot=n_boot, seed=seed)  # fmt: skip
            for i, layer in zip(g.index, g["layer"]):
                out.loc[i, ["recovery_lo", "recovery_hi"]] = percentile_interval(reps[layer], ci)
    return out.sort_values(["model", "epoch", "layer_index"]).reset_index(drop=True)


def retraining_summary(retraining: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """Clean and adversarial accuracy per (model, strategy): mean (and s.d.) over
    initialisations, with the layers and parameters trained."""
    g = retraining.groupby(["model", "epoch", "strategy", "data"], sort=False)
    acc = g[metric].agg(["mean", "std", "count"]).reset_index()
    wide = acc.pivot_table(index=["model", "epoch", "strategy"], columns="data", values="mean", sort=False)
    wide.columns = [f"{c}_{metric}" for c in wide.columns]
    info = retraining.groupby(["model", "epoch", "strategy"], sort=False).agg(
        n_inits=("init", "nunique"), retrain_epochs=("retrain_epochs", "first"),
        n_layers_trained=("n_layers_trained", "mean"), n_params_trained=("n_params_trained", "mean"),
        n_params=("n_params", "first"), layers_trained=("layers_trained", lambda s: " | ".join(sorted(set(s)))),
    )  # fmt: skip
    out = info.join(wide).reset_index()
    order = {"none": 0, "selective": 1, "full": 2}
    return out.sort_values(["model", "strategy"], key=lambda c: c.map(order) if c.name == "strategy" else c).reset_index(drop=True)


def layers_by_class(classes: pd.DataFrame, filter: str, score: str, epoch: int) -> dict[str, Sequence[str]]:
    """{class: [layer labels]} at one filter, score and epoch (from :func:`class_table`)."""
    s = classes[(classes["perturbation"] == filter) & (classes["score"] == score) & (classes["epoch"] == epoch)]
    s = s.sort_values("layer_index")
    return {c: list(s.loc[s["class"] == c, "layer_label"]) for c in (MAP_CLASSES if "lo" in s else CLASSES)}


def layer_baseline(sweeps: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """The unfiltered rows made at the per-layer sweeps' budget: the baseline table holds a
    second pair of rows per checkpoint when whole-network mode has its own ``eps``
    (``pravin2024.attack.network_eps``)."""
    if "eps" not in baseline.columns or "eps" not in sweeps.columns:
        return baseline
    eps = sweeps.loc[sweeps["mode"] == "layer", "eps"].unique()
    return baseline[baseline["eps"].isin(eps)] if len(eps) else baseline


#: The two score definitions the report shows side by side: (normalise, baseline, label).
DEFINITIONS = (("first_point", "density", "authors"), ("clean", "constant", "ours (before)"))


def scores_by_definition(sweeps: pd.DataFrame, baseline: pd.DataFrame, *, tolerance: float, metric: str = "top1") -> pd.DataFrame:
    """The filtering scores of every curve under each of :data:`DEFINITIONS`
    (:func:`~netperturb.studies.pravin2024.scores.filtering_scores`), long form with a
    ``definition`` column (the label)."""
    parts = [filtering_scores(sweeps, baseline, tolerance=tolerance, metric=metric, normalise=n, baseline=b).assign(definition=lab)
             for n, b, lab in DEFINITIONS]  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def definition_classes(by_def: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per-layer mode: how many (layer, filter) pairs each definition puts in each class, per
    model, epoch and score (scores averaged over initialisations first)."""
    s = by_def[by_def["mode"] == "layer"]
    m = s.groupby(["model", "epoch", "score", "definition", "perturbation", "layer_index"], sort=False)["value"].mean().reset_index()
    m["class"] = [classify(v, tolerance) for v in m["value"]]
    out = m.groupby(["model", "epoch", "score", "definition", "class"]).size().unstack("class", fill_value=0)
    out = out.reindex(columns=[c for c in (*CLASSES, "undefined") if c in out.columns or c in CLASSES], fill_value=0)
    order = {s: i for i, s in enumerate(SCORES)}
    return out.reset_index().sort_values(["model", "epoch", "score"], key=lambda c: c.map(order) if c.name == "score" else c,
                                         kind="stable").reset_index(drop=True)  # fmt: skip


def network_definition_table(by_def: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Whole-network mode: the score and class of every (model, epoch, filter, score) under
    each definition, side by side (scores averaged over initialisations)."""
    s = by_def[by_def["mode"] == "network"]
    m = s.groupby(["model", "epoch", "filter", "score", "definition"], sort=False)["value"].mean().reset_index()
    m["class"] = [classify(v, tolerance) for v in m["value"]]
    wide = m.pivot_table(index=["model", "epoch", "filter", "score"], columns="definition", values=["value", "class"],
                         aggfunc="first", sort=False)  # fmt: skip
    wide.columns = [f"{d}: {v}" for v, d in wide.columns]
    labels = [lab for _, _, lab in DEFINITIONS]
    cols = [f"{d}: {v}" for d in labels for v in ("value", "class") if f"{d}: {v}" in wide.columns]
    return wide[cols].reset_index()
