"""Figures and tables of the hardware-fault report: accuracy and SDC against fault rate per
layer, the per-layer vulnerability ranking (half-accuracy rate with a bootstrap interval),
fp32 against int8, and which bit positions matter."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "METRIC_LABELS", "summarize", "clean_values", "plot_metric_vs_rate", "half_rate", "vulnerability",
    "plot_vulnerability", "compare_at_rate", "bit_positions_table", "plot_bit_positions", "variant_title",
]  # fmt: skip

METRIC_LABELS = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "sdc1": "SDC-1 (top-1 changed)",
                 "sdc5": "SDC-5 (true class left top 5)", "due": "DUE (NaN / Inf logit)"}  # fmt: skip
_KEYS = ["model", "perturbation", "fault", "target", "format", "bits", "reference", "layer", "layer_label", "layer_index"]


def variant_title(row: pd.Series | dict) -> str:
    """``fp32 bit_flip, bits exponent (weights)`` for a variant's first row."""
    bits = f", bits {row['bits']}" if row["bits"] not in ("", "all") and isinstance(row["bits"], str) else ""
    fmt = f"{row['format']} " if row["fault"] in ("bit_flip", "stuck_at") else ""
    return f"{row['perturbation']}: {fmt}{row['fault']}{bits} ({row['target']})"


def summarize(df: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """Mean, s.d. (ddof = 1), min, max and count of ``metric`` over repeats per variant x
    layer x level (NaN values, e.g. SDC where the clean network gets nothing right, are skipped)."""
    g = df.groupby(_KEYS + ["level"], sort=True, dropna=False)[metric]
    return g.agg(mean="mean", sd="std", lo="min", hi="max", n="count").reset_index()


def clean_values(baseline: pd.DataFrame, metric: str = "top1") -> dict[tuple[str, str], float]:
    """(model, reference) -> ``metric`` of the fault-free network (the baseline rows)."""
    return {(r.model, r.reference): float(getattr(r, metric)) for r in baseline.itertuples()}


def plot_metric_vs_rate(
    df: pd.DataFrame, baseline: pd.DataFrame, model: str, *, metric: str = "top1",
    perturbations: Sequence[str] | None = None, palette: str = "viridis", ncols: int = 3,
):  # fmt: skip
    """``metric`` against fault level (log x), one line per layer (colour by depth), one panel
    per fault variant: the mean over repeats, the band from the lowest to the highest repeat.
    Level 0 is not on a log axis: the fault-free network is the dotted line (accuracy) and a
    level whose draws flip no bit at all (rate x bits < 1) sits on it. Returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sub = df[(df["model"] == model) & (df["level"] > 0)]
    perts = list(perturbations) if perturbations is not None else list(dict.fromkeys(sub["perturbation"]))
    perts = [p for p in perts if (sub["perturbation"] == p).any()]
    summ = summarize(sub, metric)
    layers = summ.drop_duplicates("layer").sort_values("layer_index")
    colors = dict(zip(layers["layer"], sns.color_palette(palette, n_colors=max(len(layers), 1))))
    clean = clean_values(baseline, metric) if metric in ("top1", "top5") else {}
    ncols = min(ncols, max(len(perts), 1))
    nrows = -(-len(perts) // ncols) if perts else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.4 * nrows), sharey=True, squeeze=False)
    for ax in axes.flat[len(perts):]:
        ax.set_visible(False)
    for ax, pert in zip(axes.flat, perts):
        s = summ[summ["perturbation"] == pert]
        for _, lay in layers.iterrows():
            c = s[s["layer"] == lay["layer"]].sort_values("level")
            if c.empty:
                continue
            ax.plot(c["level"], c["mean"], marker="o", ms=3, lw=1.4, color=colors[lay["layer"]], label=lay["layer_label"])
            ax.fill_between(c["level"], c["lo"], c["hi"], color=colors[lay["layer"]], alpha=0.2, lw=0)
        first = s.iloc[0]
        ref = clean.get((model, first["reference"]))
        if ref is not None:
            ax.axhline(ref, ls=":", color="0.5", lw=1)
            ax.axhline(ref / 2, ls="--", color="0.75", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(variant_title(first), fontsize=9)
        ax.set_xlabel("fault rate" if first["fault"] not in ("multiplicative_noise", "activation_noise") else "relative s.d.")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel(METRIC_LABELS.get(metric, metric))
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[l], marker="o", ms=3, label=lab) for l, lab in zip(layers["layer"], layers["layer_label"])]
    if clean:
        handles.append(Line2D([], [], color="0.5", ls=":", label="fault-free"))
        handles.append(Line2D([], [], color="0.75", ls="--", label="half of it"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="layer")
    fig.suptitle(f"{model}: {METRIC_LABELS.get(metric, metric)} against fault rate (band: min..max over repeats)")
    fig.tight_layout()
    return fig


def half_rate(levels: np.ndarray, values: np.ndarray, clean: float) -> np.ndarray:
    """The level at which ``values`` first fall to half of ``clean``: linear interpolation in
    log10(level) between the last level above and the first at or below ``clean / 2``.

    Args:
        levels: (L,) increasing, > 0. values: (..., L) (e.g. bootstrap rows).

    Returns:
        (...,) levels; ``levels[0]`` when the first level is already at or below half (the
        true rate is lower: censored), ``inf`` when no level gets there (above the grid).
    """
    levels = np.asarray(levels, float)
    values = np.atleast_2d(np.asarray(values, float))
    target = clean / 2
    below = values <= target
    has = below.any(-1)
    first = np.argmax(below, -1)
    prev = np.maximum(first - 1, 0)
    x0, x1 = np.log10(levels[prev]), np.log10(levels[first])
    v0 = np.take_along_axis(values, prev[:, None], -1)[:, 0]
    v1 = np.take_along_axis(values, first[:, None], -1)[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(v0 != v1, (v0 - target) / (v0 - v1), 0.0)
    out = 10 ** (x0 + np.clip(t, 0, 1) * (x1 - x0))
    out = np.where(first == 0, levels[0], out)
    return np.where(has, out, np.inf)


def vulnerability(
    df: pd.DataFrame, baseline: pd.DataFrame, *, metric: str = "top1", n_boot: int = 1000, ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """Per model x variant x layer: the rate at which mean ``metric`` over repeats falls to
    half its fault-free value (:func:`half_rate`), with a percentile bootstrap interval over
    repeats (at every level the repeats are resampled with replacement, ``n_boot`` times).
    Smaller = more vulnerable; ``rank`` 1 is the most vulnerable layer of a variant.

    Returns:
        columns ``model, perturbation, reference, layer, layer_label, layer_index, clean,
        half_rate, lo, hi, n_repeats, censored`` (``below grid``: already at half at the
        lowest nonzero level; ``above grid``: never at half), ``rank``.
    """
    rng = np.random.default_rng(seed)
    clean = clean_values(baseline, metric)
    rows = []
    sub = df[df["level"] > 0]
    for keys, g in sub.groupby(_KEYS, sort=False):
        rec = dict(zip(_KEYS, keys))
        c = clean.get((rec["model"], rec["reference"]))
        if c is None or not np.isfinite(c) or c <= 0:
            continue
        wide = g.pivot_table(index="level", columns="repeat", values=metric, aggfunc="first").sort_index()
        levels, v = wide.index.to_numpy(float), wide.to_numpy(float)
        point = float(half_rate(levels, v.mean(1), c)[0])
        r = v.shape[1]
        idx = rng.integers(0, r, size=(n_boot, len(levels), r))
        boot = np.take_along_axis(np.broadcast_to(v, (n_boot, *v.shape)), idx, 2).mean(-1)
        hr = half_rate(levels, boot, c)
        big = np.finfo(float).max  # quantiles of a sample with inf (never at half): inf stays inf
        lo, hi = (np.inf if q >= big / 2 else float(q) for q in np.quantile(np.where(np.isinf(hr), big, hr),
                                                                          [(1 - ci) / 2, (1 + ci) / 2]))
        censored = "above grid" if np.isinf(point) else "below grid" if point == levels[0] else ""
        rows.append({**{k: rec[k] for k in ("model", "perturbation", "reference", "layer", "layer_label", "layer_index")},
                     "clean": c, "half_rate": point, "lo": lo, "hi": hi, "n_repeats": r, "censored": censored})  # fmt: skip
    cols = ["model", "perturbation", "reference", "layer", "layer_label", "layer_index", "clean", "half_rate", "lo",
            "hi", "n_repeats", "censored", "rank"]  # fmt: skip
    out = pd.DataFrame(rows, columns=cols[:-1])
    if len(out):
        out["rank"] = out.groupby(["model", "perturbation"])["half_rate"].rank(method="min").astype(int)
        out = out.sort_values(["model", "perturbation", "rank", "layer_index"]).reset_index(drop=True)
    else:
        out["rank"] = pd.Series(dtype=int)
    return out


def plot_vulnerability(table: pd.DataFrame, model: str, perturbations: Sequence[str] | None = None):
    """Half-accuracy rate per layer (log x), one colour per variant, bootstrap interval as
    error bar; a layer that never reaches half on the grid is drawn at the grid's edge with
    an open marker. Layers top to bottom in depth order. Returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sub = table[table["model"] == model]
    perts = list(perturbations) if perturbations is not None else list(dict.fromkeys(sub["perturbation"]))
    layers = sub.drop_duplicates("layer").sort_values("layer_index")
    ypos = {l: i for i, l in enumerate(layers["layer"])}
    finite = sub[np.isfinite(sub["half_rate"])]
    edge = float(np.nanmax(np.where(np.isfinite(sub["hi"]), sub["hi"], np.nan))) * 2 if len(finite) else 1.0
    colors = dict(zip(perts, sns.color_palette("tab10", n_colors=max(len(perts), 1))))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(layers) + 1.8))
    for j, pert in enumerate(perts):
        s = sub[sub["perturbation"] == pert]
        off = (j - (len(perts) - 1) / 2) * 0.12
        for n, (_, r) in enumerate(s.iterrows()):
            y = ypos[r["layer"]] + off
            x = r["half_rate"] if np.isfinite(r["half_rate"]) else edge
            lo = r["lo"] if np.isfinite(r["lo"]) else edge
            hi = r["hi"] if np.isfinite(r["hi"]) else edge
            ax.plot([lo, hi], [y, y], color=colors[pert], lw=1.5)
            marker = "<" if r["censored"] == "below grid" else "o"
            ax.plot([x], [y], marker, color=colors[pert], mfc=colors[pert] if np.isfinite(r["half_rate"]) else "white",
                    label=pert if n == 0 else None)  # fmt: skip
    ax.set_yticks(range(len(layers)), layers["layer_label"])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("rate at which top-1 falls to half its fault-free value (log)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(f"{model}: per-layer vulnerability (smaller = more vulnerable)\nopen: never at half on the grid; "
                 "<: already at half at the grid's lowest rate", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig


def compare_at_rate(
    df: pd.DataFrame, baseline: pd.DataFrame, rate: float, *, metric: str = "top1",
    perturbations: Sequence[str] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """``metric`` (mean over repeats) at ``rate`` per model x layer x variant, with the
    variant's fault-free value and the relative value ``mean / clean``, the SDC-1 and DUE
    means: e.g. fp32 against int8 side by side.

    Returns:
        columns ``model, layer, layer_label, layer_index, perturbation, reference, format,
        bits, clean, mean, relative, sdc1, due``.
    """
    clean = clean_values(baseline, metric)
    at = df[np.isclose(df["level"], rate, rtol=1e-9, atol=0)]
    if perturbations is not None:
        at = at[at["perturbation"].isin(list(perturbations))]
    keys = ["model", "layer", "layer_label", "layer_index", "perturbation", "reference", "format", "bits"]
    out = at.groupby(keys, sort=False, dropna=False).agg(mean=(metric, "mean"), sdc1=("sdc1", "mean"),
                                                         due=("due", "mean")).reset_index()  # fmt: skip
    out["clean"] = [clean.get((m, r), np.nan) for m, r in zip(out["model"], out["reference"])]
    out["relative"] = out["mean"] / out["clean"]
    cols = keys + ["clean", "mean", "relative", "sdc1", "due"]
    return out[cols].sort_values(["model", "layer_index", "perturbation"]).reset_index(drop=True)


def bit_positions_table(df: pd.DataFrame, baseline: pd.DataFrame, rate: float, *, metric: str = "top1") -> pd.DataFrame:
    """Which bit positions matter: for the fp32 weight bit-flip variants (each restricted to
    a group of positions, or all), the drop ``clean - mean`` of ``metric`` at ``rate`` per
    layer. The rate is per eligible bit, so every variant hits its positions equally often.

    Returns:
        columns ``model, layer, layer_label, layer_index, perturbation, bits, clean, mean, drop``.
    """
    sub = df[(df["fault"] == "bit_flip") & (df["format"] == "fp32") & (df["target"] == "weights")]
    t = compare_at_rate(sub, baseline, rate, metric=metric)
    t["drop"] = t["clean"] - t["mean"]
    return t[["model", "layer", "layer_label", "layer_index", "perturbation", "bits", "clean", "mean", "drop"]]


def plot_bit_positions(table: pd.DataFrame, model: str, rate: float):
    """Bars: accuracy drop per layer at ``rate``, one bar per group of bit positions."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sub = table[table["model"] == model]
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    if len(sub):
        order = sorted(sub["bits"].unique(), key=lambda b: (b != "all", b != "exponent", b))
        sns.barplot(data=sub.sort_values("layer_index"), x="layer_label", y="drop", hue="bits", hue_order=order, ax=ax,
                    palette="Set2")  # fmt: skip
    ax.set_xlabel("layer")
    ax.set_ylabel("top-1 drop (clean - faulty)")
    ax.set_ylim(-0.05, 1.0)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(f"{model}: which fp32 bit positions matter (weight bit flips at rate {rate:g} per eligible bit)", fontsize=9)
    fig.tight_layout()
    return fig
