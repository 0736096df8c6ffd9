"""Tables and figures of the Shen et al. 2021 study (the ``shen2021`` report notebook calls these).

Inputs are the merged tables of :mod:`netperturb.studies.shen2021.jobs`: ``tracking`` (one row per
snapshot x layer x interval reading x scope x kernel), ``histograms``, ``history`` (per epoch, with
``reg_fuzziness``), ``robustness`` (per attack x eps) and ``perturbation`` (the Cheney et al.
grid per run). Every summary over seeds gives the mean, the s.d. (ddof = 1; NaN for one seed)
and the number of seeds; comparisons with lambda = 0 are paired by training seed.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "LN2",
    "UNIFORM_FUZZINESS",
    "fuzziness_trajectory",
    "fuzziness_change",
    "readings_change",
    "robust_summary",
    "spearman",
    "fuzziness_robustness",
    "perturbation_summary",
    "perturbation_auc",
    "plot_histogram_evolution",
    "plot_fuzziness_vs_epoch",
    "plot_robust_vs_eps",
    "plot_fuzziness_vs_robust",
    "plot_perturbation_by_lambda",
]

#: Fuzziness of mu = 1/2 everywhere (the maximum).
LN2 = math.log(2)
#: Expected fuzziness of positions uniform on [0, 1]: 2 * int_0^1 -mu ln mu dmu = 1/2 (PyTorch's
#: default Kaiming-uniform initialisation starts there).
UNIFORM_FUZZINESS = 0.5


def _agg(g) -> pd.DataFrame:
    return g.agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else np.nan, n="count")


def _reading(df: pd.DataFrame, interval: str, control: str = "none") -> pd.DataFrame:
    """The rows of one interval reading and one control (``none``: the trained runs; a table
    from before the readings is all ``current``, one from before the controls all ``none``)."""
    if "control" in df:
        df = df[df["control"] == control]
    elif control != "none":
        df = df.iloc[:0]
    if "interval" not in df:
        if interval != "current":
            raise ValueError(f"this table has only the 'current' reading, asked for {interval!r}")
        return df
    return df[df["interval"] == interval]


def fuzziness_trajectory(
    tracking: pd.DataFrame, scope: str = "layer", interval: str = "current", control: str = "none"
) -> pd.DataFrame:
    """Per run, layer and snapshot: ``fuzziness``, ``frac_ends``, ``frac_low``, ``frac_high``
    in the given scope (``kernel``: the mean over the layer's kernels, each in its own
    interval) under one reading of the interval (:mod:`netperturb.studies.shen2021.intervals`),
    of the trained runs (``control="none"``) or of one control (``"driftless walk"``,
    ``"shuffled labels"``: :mod:`netperturb.studies.shen2021.controls`).

    Returns:
        columns ``lam, train_seed, layer, layer_label, layer_index, epoch, step, fuzziness,
        frac_ends, frac_low, frac_high`` (and ``frac_outside`` where the tracking has it).
    """
    sub = _reading(tracking, interval, control)
    sub = sub[sub["scope"] == scope]
    keys = ["lam", "train_seed", "layer", "layer_label", "layer_index", "epoch", "step"]
    cols = ["fuzziness", "frac_ends", "frac_low", "frac_high"] + (["frac_outside"] if "frac_outside" in sub else [])
    return sub.groupby(keys, sort=True)[cols].mean().reset_index()


def fuzziness_change(
    tracking: pd.DataFrame, scope: str = "layer", interval: str = "current", end_fraction: float = 0.1,
    control: str = "none",
) -> pd.DataFrame:  # fmt: skip
    """Fuzziness and fraction near the ends at the reference and after the last epoch, per
    lambda and layer, mean and s.d. over seeds; ``delta`` = end - reference per seed;
    ``n_fell`` = seeds whose fuzziness ended below the reference.

    The reference (column ``reference``) is the initialisation (epoch 0) for the ``current``
    and ``init_bound`` readings. Under ``trajectory`` a position at initialisation does not
    exist (no weight has a range yet); the reference is a driftless random walk of as many
    steps as the run took (:func:`~netperturb.studies.shen2021.intervals.random_walk_reference`
    with ``end_fraction``): F below it means the weights end nearer the extremes of the values
    they took than diffusion alone would leave them (chosen). ``control`` picks the trained
    runs (``none``) or a control's rows (:func:`fuzziness_trajectory`); the seed-by-seed
    comparison with the controls is :func:`~netperturb.studies.shen2021.controls.control_margins`.

    Returns:
        columns ``interval, control, reference, lam, layer_index, layer_label, epochs, n_seeds,
        F0_mean, F0_sd, Fend_mean, Fend_sd, delta_mean, delta_sd, n_fell, ends0_mean,
        endsend_mean, outsideend_mean`` (``F0`` / ``ends0``: the reference's values;
        ``outsideend``: fraction of the weights beyond the interval after the last epoch,
        ``init_bound`` only, 0 for the others, NaN when the tracking does not record it).
    """
    from netperturb.studies.shen2021.intervals import random_walk_reference

    traj = fuzziness_trajectory(tracking, scope, interval, control)
    if traj.empty:
        return pd.DataFrame()
    last = traj["epoch"].max()
    idx = ["lam", "train_seed", "layer_index", "layer_label"]
    end = traj[traj["epoch"] == last].set_index(idx)
    if interval == "trajectory":
        steps = int(traj["step"].max())
        f_rw, ends_rw = random_walk_reference(max(steps, 1), end_fraction=end_fraction)
        start = pd.DataFrame({"fuzziness": f_rw, "frac_ends": ends_rw}, index=end.index)
        reference = f"random walk of {steps} steps"
    else:
        start = traj[traj["epoch"] == 0].set_index(idx)
        reference = "initialisation"
    both = pd.DataFrame({"F0": start["fuzziness"], "Fend": end["fuzziness"],
                         "ends0": start["frac_ends"], "endsend": end["frac_ends"]}).dropna()  # fmt: skip
    both["outsideend"] = end["frac_outside"] if "frac_outside" in end else np.nan
    both["delta"] = both["Fend"] - both["F0"]
    rows = []
    for (lam, idx, label), g in both.groupby(level=["lam", "layer_index", "layer_label"], sort=True):
        sd = (lambda s: s.std(ddof=1) if len(s) > 1 else np.nan)
        rows.append(
            {"interval": interval, "control": control, "reference": reference,
             "lam": lam, "layer_index": idx, "layer_label": label, "epochs": last, "n_seeds": len(g),
             "F0_mean": g["F0"].mean(), "F0_sd": sd(g["F0"]), "Fend_mean": g["Fend"].mean(), "Fend_sd": sd(g["Fend"]),
             "delta_mean": g["delta"].mean(), "delta_sd": sd(g["delta"]), "n_fell": int((g["delta"] < 0).sum()),
             "ends0_mean": g["ends0"].mean(), "endsend_mean": g["endsend"].mean(),
             "outsideend_mean": g["outsideend"].mean()}
        )  # fmt: skip
    return pd.DataFrame(rows)


def readings_change(tracking: pd.DataFrame, scope: str = "layer", end_fraction: float = 0.1) -> pd.DataFrame:
    """:func:`fuzziness_change` under every reading of the interval in ``tracking`` and for the
    trained runs and every control present, stacked (columns ``interval``, in the order of
    :data:`~netperturb.studies.shen2021.intervals.READINGS`, and ``control``: ``none`` first,
    then ``driftless walk``, ``shuffled labels``): the readings table of the Min-Max verdicts,
    the controls' rows next to the trained runs'."""
    from netperturb.studies.shen2021.controls import CONTROLS
    from netperturb.studies.shen2021.intervals import READINGS

    present = set(tracking["interval"].unique()) if "interval" in tracking else {"current"}
    controls = ["none"] + [c for c in CONTROLS if "control" in tracking and c in set(tracking["control"].unique())]
    frames = [fuzziness_change(tracking, scope, r, end_fraction, c) for r in READINGS if r in present for c in controls]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def robust_summary(robustness: pd.DataFrame, eps: float, metric: str = "top1") -> pd.DataFrame:
    """Accuracy at ``eps`` (and clean, eps = 0 if run) per attack and lambda: mean / s.d. over
    seeds, and the paired difference to lambda = 0 (same seed): mean, s.d., seeds higher.

    Returns:
        columns ``attack, eps, lam, n_seeds, clean_mean, mean, sd, diff_mean, diff_sd,
        n_higher`` (diff columns NaN when lambda = 0 was not run).
    """
    at = robustness[np.isclose(robustness["eps"], eps)]
    clean = robustness[robustness["eps"] == 0].groupby(["attack", "lam"])[metric].mean()
    rows = []
    for attack, sub in at.groupby("attack", sort=True):
        ref = sub[sub["lam"] == 0].set_index("train_seed")[metric]
        for lam, g in sub.groupby("lam", sort=True):
            v = g.set_index("train_seed")[metric]
            d = (v - ref).dropna() if len(ref) else pd.Series(dtype=float)
            rows.append(
                {"attack": attack, "eps": eps, "lam": lam, "n_seeds": len(v),
                 "clean_mean": clean.get((attack, lam), np.nan), "mean": v.mean(),
                 "sd": v.std(ddof=1) if len(v) > 1 else np.nan,
                 "diff_mean": d.mean() if len(d) else np.nan, "diff_sd": d.std(ddof=1) if len(d) > 1 else np.nan,
                 "n_higher": int((d > 0).sum()) if len(d) else 0}
            )  # fmt: skip
    return pd.DataFrame(rows)


def spearman(x: Sequence[float], y: Sequence[float], exact_below: int = 9) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value: ``scipy.stats.spearmanr`` (t approximation)
    from ``exact_below`` points on, below that the exact permutation p-value over all n!
    pairings (the t approximation gives p = 0 for a perfect rank correlation of 3 points,
    whose exact p is 1/3).

    Returns:
        (rho, p); (nan, nan) for fewer than 3 points or a constant variable.
    """
    from itertools import permutations

    from scipy.stats import rankdata, spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    res = spearmanr(x, y)
    rho = float(res.statistic)
    if n >= exact_below:
        return rho, float(res.pvalue)
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    perms = np.array(list(permutations(range(n))))
    null = (ry[perms] @ rx) / math.sqrt((rx @ rx) * (ry @ ry))
    return rho, float(np.mean(np.abs(null) >= abs(rho) - 1e-12))


def fuzziness_robustness(
    history: pd.DataFrame, robustness: pd.DataFrame, eps: float, metric: str = "top1"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Final fuzziness of the regularised layers (``reg_fuzziness`` of the last epoch: the
    quantity the loss term weighs) against robust accuracy at ``eps``, one point per run
    (all lambdas and seeds), and its Pearson and Spearman correlations
    (``scipy.stats.pearsonr``; :func:`spearman`; two-sided p-values) per attack.

    Lambda drives both variables, so a correlation across lambdas says little about a
    mechanism; the table therefore also gives the correlation within each lambda (across
    seeds) where there are at least 3 seeds.

    Returns:
        (points: ``model, lam, train_seed, fuzziness, attack, accuracy``;
         correlations: ``attack, eps, subset, n, pearson_r, pearson_p, spearman_rho,
         spearman_p``).
    """
    from scipy.stats import pearsonr

    if "control" in history:
        history = history[history["control"] == "none"]
    last = history.loc[history.groupby("model")["epoch"].idxmax(), ["model", "lam", "train_seed", "reg_fuzziness"]]
    at = robustness[np.isclose(robustness["eps"], eps)][["model", "attack", metric]]
    pts = last.merge(at, on="model").rename(columns={"reg_fuzziness": "fuzziness", metric: "accuracy"})
    rows = []
    for attack, sub in pts.groupby("attack", sort=True):
        subsets = [("all runs", sub)] + [(f"lam={lam:g}", g) for lam, g in sub.groupby("lam") if len(g) >= 3]
        for name, g in subsets:
            ok = len(g) >= 3 and g["fuzziness"].nunique() > 1 and g["accuracy"].nunique() > 1
            pr = pearsonr(g["fuzziness"], g["accuracy"]) if ok else (np.nan, np.nan)
            sr = spearman(g["fuzziness"], g["accuracy"]) if ok else (np.nan, np.nan)
            rows.append(
                {"attack": attack, "eps": eps, "subset": name, "n": len(g),
                 "pearson_r": float(pr[0]), "pearson_p": float(pr[1]),
                 "spearman_rho": float(sr[0]), "spearman_p": float(sr[1])}
            )  # fmt: skip
    return pts.reset_index(drop=True), pd.DataFrame(rows)


def perturbation_summary(perturbation: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """Accuracy per (lambda, layer, perturbation, level): the mean over repeats per seed,
    then mean / s.d. over seeds. The clean rows (perturbation ``none``) are left out.

    Returns:
        columns ``lam, layer, layer_label, layer_index, perturbation, level, mean, sd, n``.
    """
    df = perturbation[perturbation["perturbation"] != "none"]
    keys = ["lam", "layer", "layer_label", "layer_index", "perturbation", "level"]
    per_seed = df.groupby(keys + ["train_seed"], sort=True)[metric].mean()
    return _agg(per_seed.groupby(level=keys, sort=True)).reset_index()


def perturbation_auc(perturbation: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """Mean accuracy over the levels > 0 (an area under the accuracy-level curve per level)
    per run, layer and perturbation, then per lambda: mean / s.d. over seeds and the paired
    difference to lambda = 0.

    Returns:
        columns ``perturbation, layer_index, layer_label, lam, n_seeds, mean, sd, diff_mean,
        diff_sd, n_higher``.
    """
    df = perturbation[(perturbation["perturbation"] != "none") & (perturbation["level"] > 0)]
    per = df.groupby(["perturbation", "layer_index", "layer_label", "lam", "train_seed"])[metric].mean()
    rows = []
    for (pert, idx, label), g in per.groupby(level=["perturbation", "layer_index", "layer_label"], sort=True):
        g = g.droplevel(["perturbation", "layer_index", "layer_label"])
        ref = g.xs(0.0, level="lam") if 0.0 in g.index.get_level_values("lam") else None
        for lam, v in g.groupby(level="lam"):
            v = v.droplevel("lam")
            d = (v - ref).dropna() if ref is not None else pd.Series(dtype=float)
            rows.append(
                {"perturbation": pert, "layer_index": idx, "layer_label": label, "lam": lam, "n_seeds": len(v),
                 "mean": v.mean(), "sd": v.std(ddof=1) if len(v) > 1 else np.nan,
                 "diff_mean": d.mean() if len(d) else np.nan, "diff_sd": d.std(ddof=1) if len(d) > 1 else np.nan,
                 "n_higher": int((d > 0).sum())}
            )  # fmt: skip
    return pd.DataFrame(rows)


def _lam_colors(lams: Sequence[float]) -> dict[float, tuple]:
    import seaborn as sns

    lams = sorted(set(lams))
    return dict(zip(lams, sns.color_palette("viridis", n_colors=max(len(lams), 1))))


def _epoch_axis(ax, last: float) -> None:
    """Linear on [0, 1] (the first-epoch snapshots), logarithmic beyond; plain tick labels."""
    from matplotlib.ticker import FixedLocator, NullLocator, StrMethodFormatter

    ax.set_xscale("symlog", linthresh=1.0, linscale=0.6)
    ax.set_xlim(0, max(last, 1))
    ticks = [t for t in (0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200) if t <= 1 or t <= last / 1.6] + ([last] if last > 1 else [])
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(ticks))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.set_xlabel("epoch (linear to 1, log beyond)")


def plot_histogram_evolution(
    histograms: pd.DataFrame, scope: str = "layer", lams: Sequence[float] | None = None, interval: str = "current"
):
    """Heat map of the interval-position histogram over training: one panel per layer (rows)
    and lambda (columns); x = snapshot (first-epoch points, then every epoch), y = mu, colour
    = fraction of the layer's weights in the bin (mean over seeds), under one reading of the
    interval. Returns the Figure."""
    import matplotlib.pyplot as plt

    h = _reading(histograms, interval)  # the trained runs (control "none")
    h = h[h["scope"] == scope]
    lams = sorted(h["lam"].unique()) if lams is None else list(lams)
    layers = h.drop_duplicates("layer").sort_values("layer_index")[["layer", "layer_label"]].values.tolist()
    epochs = np.sort(h["epoch"].unique())
    bins = np.sort(h["bin"].unique())
    edges_y = np.linspace(0, 1, len(bins) + 1)
    edges_x = np.arange(len(epochs) + 1)
    mean = h.groupby(["lam", "layer", "epoch", "bin"])["fraction"].mean()
    vmax = float(mean.quantile(0.99)) or 1.0
    fig, axes = plt.subplots(len(layers), len(lams), figsize=(2.6 * len(lams) + 1, 1.5 * len(layers) + 0.8),
                             sharex=True, sharey=True, squeeze=False)  # fmt: skip
    mesh = None
    for i, (layer, label) in enumerate(layers):
        for j, lam in enumerate(lams):
            ax = axes[i][j]
            try:
                grid = mean.loc[(lam, layer)].unstack("bin").reindex(index=epochs, columns=bins).to_numpy().T
            except KeyError:
                ax.set_axis_off()
                continue
            mesh = ax.pcolormesh(edges_x, edges_y, grid, cmap="magma", vmin=0, vmax=vmax, shading="flat", rasterized=True)
            if i == 0:
                ax.set_title(f"lambda = {lam:g}")
            if j == 0:
                ax.set_ylabel(f"{label}\nmu")
    ticks = [k for k, e in enumerate(epochs) if e == 0 or (e >= 1 and float(e).is_integer() and (e in (1, epochs[-1]) or e % 5 == 0))]
    for ax in axes[-1]:
        ax.set_xticks(np.array(ticks) + 0.5)
        ax.set_xticklabels([f"{epochs[k]:g}" for k in ticks], fontsize=7)
        ax.set_xlabel("epoch (snapshot)")
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, shrink=0.6, label="fraction of weights")
    what = {"current": f"the {scope}'s current [min, max]", "init_bound": "the initialisation interval +/- 1/sqrt(fan_in)",
            "trajectory": "each weight's own range over training"}.get(interval, interval)  # fmt: skip
    fig.suptitle(f"Position mu in {what}, over training")
    return fig


def plot_fuzziness_vs_epoch(
    tracking: pd.DataFrame, scope: str = "layer", metric: str = "fuzziness", interval: str = "current"
):
    """``metric`` (``fuzziness`` or ``frac_ends``) against epoch under one reading of the
    interval, one panel per layer, one line per lambda with a +/- s.d. band over seeds;
    reference lines ln 2 and 1/2 (uniform mu) for fuzziness. Returns the Figure."""
    import matplotlib.pyplot as plt

    traj = fuzziness_trajectory(tracking, scope, interval).dropna(subset=[metric])
    layers = traj.drop_duplicates("layer").sort_values("layer_index")
    colors = _lam_colors(traj["lam"])
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.2), sharey=True, squeeze=False)
    for ax, (_, lay) in zip(axes[0], layers.iterrows()):
        sub = traj[traj["layer"] == lay["layer"]]
        for lam, g in sub.groupby("lam"):
            s = _agg(g.groupby("epoch")[metric]).reset_index()
            sd = s["sd"].fillna(0)
            ax.plot(s["epoch"], s["mean"], color=colors[lam], lw=1.5, label=f"{lam:g}")
            ax.fill_between(s["epoch"], s["mean"] - sd, s["mean"] + sd, color=colors[lam], alpha=0.25, lw=0)
        if metric == "fuzziness":
            ax.axhline(LN2, color="0.5", ls="--", lw=0.8)
            ax.axhline(UNIFORM_FUZZINESS, color="0.5", ls=":", lw=0.8)
        _epoch_axis(ax, float(traj["epoch"].max()))
        ax.set_title(lay["layer_label"])
        ax.grid(alpha=0.3)
    ylabel = {"fuzziness": "fuzziness F (nats)", "frac_ends": "fraction near an end"}.get(metric, metric)
    axes[0][0].set_ylabel(f"{ylabel}, {scope} interval" if interval == "current" else f"{ylabel}, {interval}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="lambda", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    note = "dashed: ln 2 (all at the centre); dotted: 1/2 (uniform mu)" if metric == "fuzziness" else ""
    fig.suptitle(f"{ylabel} over training (mean +/- s.d. over seeds). {note}")
    fig.tight_layout()
    return fig


def plot_robust_vs_eps(robustness: pd.DataFrame, metric: str = "top1", chance: float | None = None):
    """Accuracy against eps, one panel per attack, one line per lambda, +/- s.d. over seeds."""
    import matplotlib.pyplot as plt

    attacks = sorted(robustness["attack"].unique())
    colors = _lam_colors(robustness["lam"])
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.2 * len(attacks), 3.4), sharey=True, squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        sub = robustness[robustness["attack"] == attack]
        for lam, g in sub.groupby("lam"):
            s = _agg(g.groupby("eps")[metric]).reset_index()
            sd = s["sd"].fillna(0)
            ax.plot(s["eps"], s["mean"], marker="o", ms=3, color=colors[lam], label=f"{lam:g}")
            ax.fill_between(s["eps"], s["mean"] - sd, s["mean"] + sd, color=colors[lam], alpha=0.25, lw=0)
        if chance is not None:
            ax.axhline(chance, ls="--", color="0.4", lw=1)
        steps = int(sub["steps"].iloc[0])
        ax.set_title(attack.upper() + (f" ({steps} steps)" if attack == "pgd" else ""))
        ax.set_xlabel("eps (fraction of the pixel range)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric.replace('top', 'top-')} accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="lambda", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle("Adversarial accuracy against eps (mean +/- s.d. over seeds)")
    fig.tight_layout()
    return fig


def plot_fuzziness_vs_robust(points: pd.DataFrame, correlations: pd.DataFrame):
    """Final fuzziness of the regularised layers against robust accuracy, one point per run,
    coloured by lambda, one panel per attack; Pearson r / Spearman rho over all runs in the
    title."""
    import matplotlib.pyplot as plt

    attacks = sorted(points["attack"].unique())
    colors = _lam_colors(points["lam"])
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.2 * len(attacks), 3.6), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        sub = points[points["attack"] == attack]
        for lam, g in sub.groupby("lam"):
            ax.scatter(g["fuzziness"], g["accuracy"], color=colors[lam], s=28, label=f"{lam:g}", edgecolor="k", lw=0.4)
        c = correlations[(correlations["attack"] == attack) & (correlations["subset"] == "all runs")]
        if len(c):
            c = c.iloc[0]
            ax.set_title(f"{attack.upper()}, eps {c['eps']:g}: r = {c['pearson_r']:.2f} (p = {c['pearson_p']:.2g}),\n"
                         f"rho = {c['spearman_rho']:.2f} (p = {c['spearman_p']:.2g}), n = {int(c['n'])}", fontsize=9)  # fmt: skip
        ax.set_xlabel("final fuzziness of the regularised layers (nats)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("robust accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="lambda", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def plot_perturbation_by_lambda(summary: pd.DataFrame, chance: float | None = None):
    """Accuracy under internal perturbation against level: rows = perturbations, columns =
    layers, one line per lambda (mean +/- s.d. over seeds of the repeat means)."""
    import matplotlib.pyplot as plt

    from netperturb.perturb.registry import LEVEL_LABELS, PERTURBATION_TITLES

    perts = sorted(summary["perturbation"].unique(), key=lambda p: list(PERTURBATION_TITLES).index(p) if p in PERTURBATION_TITLES else 99)
    layers = summary.drop_duplicates("layer").sort_values("layer_index")
    colors = _lam_colors(summary["lam"])
    fig, axes = plt.subplots(len(perts), len(layers), figsize=(2.6 * len(layers) + 1, 2.3 * len(perts) + 0.6),
                             sharey=True, squeeze=False)  # fmt: skip
    for i, pert in enumerate(perts):
        for j, (_, lay) in enumerate(layers.iterrows()):
            ax = axes[i][j]
            sub = summary[(summary["perturbation"] == pert) & (summary["layer"] == lay["layer"])]
            for lam, g in sub.groupby("lam"):
                g = g.sort_values("level")
                sd = g["sd"].fillna(0)
                ax.plot(g["level"], g["mean"], marker="o", ms=2.5, color=colors[lam], label=f"{lam:g}")
                ax.fill_between(g["level"], g["mean"] - sd, g["mean"] + sd, color=colors[lam], alpha=0.2, lw=0)
            if chance is not None:
                ax.axhline(chance, ls="--", color="0.4", lw=0.8)
            if i == 0:
                ax.set_title(lay["layer_label"])
            if j == 0:
                ax.set_ylabel(f"{PERTURBATION_TITLES.get(pert, pert)}\naccuracy", fontsize=8)
            ax.set_xlabel(LEVEL_LABELS.get(pert, "level"), fontsize=7)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="lambda", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle("Internal perturbation of the fuzziness-regularised models (mean +/- s.d. over seeds)")
    fig.tight_layout()
    return fig
