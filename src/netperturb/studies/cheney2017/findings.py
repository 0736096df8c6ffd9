"""The "Findings" block of the Cheney et al. 2017 report: the paper's headline checked on this
run's merged tables (synapse knockout at the drop level, top layers against conv1), each with
a percentile bootstrap interval over repeats (:mod:`netperturb.core.findings`) and the number
of repeats it would need for its interval to clear its threshold (:func:`repeats_table`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from netperturb.core.findings import Finding, assess, format_interval, percentile_interval, repeats_needed, resample_counts

__all__ = ["TOP_LAYERS_CLAIM", "CONV1_CLAIM", "findings", "finding_cells", "repeats_table"]

TOP_LAYERS_CLAIM = "Removing >70% of the weights of the top conv or dense layers costs <30% of top-5 accuracy"
CONV1_CLAIM = "The same knockout in conv1 gives near-chance accuracy"
METRIC_NAMES = {"top1": "top-1", "top5": "top-5"}
_INTERVAL = "{:.0%} percentile bootstrap over repeats ({} resamples)"


def _split_layers(sub: pd.DataFrame) -> tuple[pd.Series | None, pd.DataFrame]:
    """(first conv row, top layers: the last conv unless it is the first, and every dense layer)."""
    sub = sub.sort_values("layer_index")
    convs = sub[sub["layer_label"].str.startswith("conv")]
    first = convs.iloc[0] if len(convs) else None
    top = sub[sub["layer_label"].str.startswith("fc")]
    if len(convs) > 1:
        top = pd.concat([convs.iloc[[-1]], top])
    return first, top


def _nearest_level(levels: np.ndarray, target: float) -> float:
    return float(levels[np.argmin(np.abs(levels - target))])


def _chance(metric: str, num_classes: int) -> float:
    return (1 / num_classes) if metric == "top1" else min(5, num_classes) / num_classes


def finding_cells(
    perturbation: pd.DataFrame, baseline: pd.DataFrame, *, num_classes: int, level: float = 0.7, metric: str = "top5",
    near_chance: float = 0.2,
) -> pd.DataFrame:  # fmt: skip
    """The repeats behind the two findings, one row per (model, layer, repeat) of synapse
    knockout at the grid level nearest ``level``: ``model, layer, layer_label, layer_index,
    role`` (``conv1``: the first conv; ``top``: the last conv unless it is the first, and the
    dense layers; ``other``), ``level_used, repeat, accuracy, clean, chance,
    relative_drop`` (``1 - accuracy / clean``) and ``way`` (``(accuracy - chance) / (clean -
    chance)``, the fraction of the way from chance to clean; NaN when clean <= chance)."""
    sk = perturbation[perturbation["perturbation"] == "synapse_knockout"]
    chance = _chance(metric, num_classes)
    base = baseline.set_index("model")[metric]
    frames = []
    for model, sub in sk.groupby("model", sort=False):
        lv = _nearest_level(np.sort(sub["level"].unique()), level)
        at = sub[np.isclose(sub["level"], lv)]
        layers = at.drop_duplicates("layer").sort_values("layer_index")
        first, top = _split_layers(layers)
        role = {l: "top" for l in top["layer"]}
        if first is not None:
            role[first["layer"]] = "conv1"
        clean = float(base.loc[model])
        cell = at[["model", "layer", "layer_label", "layer_index", "repeat", metric]].rename(columns={metric: "accuracy"})
        cell = cell.assign(role=cell["layer"].map(role).fillna("other"), level_used=lv, clean=clean, chance=chance)
        cell["relative_drop"] = 1 - cell["accuracy"] / clean if clean > 0 else np.nan
        cell["way"] = (cell["accuracy"] - chance) / (clean - chance) if clean > chance else np.nan
        frames.append(cell.sort_values(["layer_index", "repeat"]))
    cols = ["model", "layer", "layer_label", "layer_index", "role", "level_used", "repeat", "accuracy", "clean", "chance",
            "relative_drop", "way"]  # fmt: skip
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def _mean_replicates(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot,) bootstrap replicates of the mean of ``values`` (resampled repeats)."""
    counts = resample_counts(len(values), n_boot, seed)
    return counts @ values / len(values)


def repeats_table(
    cells: pd.DataFrame, *, max_drop: float = 0.30, near_chance: float = 0.2, ci: float = 0.95
) -> pd.DataFrame:
    """The power helper applied to every layer of the findings: how many repeats its
    interval needs to clear the finding's threshold
    (:func:`netperturb.core.findings.repeats_needed` on the per-repeat values; relative drop
    against ``max_drop`` for the top layers, the way from chance to clean against
    ``near_chance`` for conv1).

    Returns:
        columns ``model, layer_label, role, quantity, threshold, n_repeats, mean, sd,
        repeats_needed``.
    """
    rows = []
    for (model, label, role), g in cells[cells["role"] != "other"].groupby(["model", "layer_label", "role"], sort=False):
        col, thr = ("way", near_chance) if role == "conv1" else ("relative_drop", max_drop)
        v = g[col].to_numpy(float)
        rows.append({"model": model, "layer_label": label, "role": role, "quantity": col, "threshold": thr,
                     "n_repeats": len(v), "mean": float(np.mean(v)) if len(v) else np.nan,
                     "sd": float(np.std(v, ddof=1)) if len(v) > 1 else np.nan,
                     "repeats_needed": repeats_needed(v, thr, ci=ci)})  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "layer_label", "role", "quantity", "threshold", "n_repeats", "mean", "sd",
                                       "repeats_needed"])  # fmt: skip


def _needed_text(n: float, have: int) -> str:
    if n != n:
        return ""
    if math.isinf(n):
        return "; no number of repeats separates it from the threshold at this mean"
    if n <= have:
        return f"; {int(n)} repeats would suffice at this mean and s.d."
    return f"; about {int(n)} repeats would be needed for the interval to clear the threshold at this mean and s.d."


def findings(
    perturbation: pd.DataFrame,
    baseline: pd.DataFrame,
    *,
    num_classes: int,
    level: float = 0.7,
    metric: str = "top5",
    max_drop: float = 0.30,
    near_chance: float = 0.2,
    ci: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    source: str = "cheney2017/perturbation.csv, cheney2017/baseline.csv",
) -> list[Finding]:
    """Two findings per model, from synapse knockout at the level nearest ``level``
    (:func:`finding_cells`), each with a percentile bootstrap interval over repeats
    (``ci``, ``n_boot`` resamples, ``seed``; the clean accuracy is a constant):

    - top layers (the last conv and the dense layers): the estimate is the *worst* top
      layer's relative drop ``1 - mean acc / clean``; its interval comes from the maximum over
      the top layers of each resample's relative drops (every layer's repeats resampled on
      their own: the draws of different layers are independent). Holds when the interval
      lies below ``max_drop`` (Cheney et al. 2017, Sec. 3 and Fig. 1: "<30% of top-5");
    - conv1 (the first conv): near chance when the mean accuracy is less than
      ``near_chance`` of the way from chance to clean accuracy: the estimate is ``(acc -
      chance) / (clean - chance)``, the claim ``< near_chance``.

    Each finding names the repeats its interval would need to clear the threshold
    (:func:`repeats_table`). A model without such layers (or a run without synapse knockout,
    or a clean accuracy at or below chance) gets "not tested". ``metric`` is the report's
    metric; the paper measured top-5 on ImageNet.
    """
    name = METRIC_NAMES.get(metric, metric)
    interval = _INTERVAL.format(ci, n_boot)
    cells = finding_cells(perturbation, baseline, num_classes=num_classes, level=level, metric=metric,
                          near_chance=near_chance)  # fmt: skip
    if cells.empty:
        return [Finding(TOP_LAYERS_CLAIM, "This run has no synapse knockout.", "not tested", source)]
    need = repeats_table(cells, max_drop=max_drop, near_chance=near_chance, ci=ci).set_index(["model", "layer_label"])
    out = []
    for model, sub in cells.groupby("model", sort=False):
        lv = float(sub["level_used"].iloc[0])
        clean, chance = float(sub["clean"].iloc[0]), float(sub["chance"].iloc[0])
        at = f"{lv:.0%} of the weights removed" + ("" if lv >= 0.7 else " (the level nearest 70% on this grid)")
        top = sub[sub["role"] == "top"]
        if top.empty:
            out.append(Finding(TOP_LAYERS_CLAIM, f"{model}: no top conv or dense layer was perturbed.", "not tested", source))
        elif not clean > 0:
            out.append(Finding(TOP_LAYERS_CLAIM, f"{model}, {name}: the clean {name} accuracy is {clean:.3f}, so a relative "
                               "drop is undefined.", "not tested", source))  # fmt: skip
        else:
            per, reps = [], []
            for i, (label, g) in enumerate(top.groupby("layer_label", sort=False)):
                acc = g["accuracy"].to_numpy(float)
                r = 1 - _mean_replicates(acc, n_boot, seed + i) / clean
                lo, hi = percentile_interval(r, ci)
                per.append((label, 1 - acc.mean() / clean, float(lo), float(hi), len(acc)))
                reps.append(r)
            worst = max(per, key=lambda p: p[1])
            lo, hi = percentile_interval(np.max(np.stack(reps), axis=0), ci)
            each = ", ".join(f"{l} {format_interval(d, a, b, '{:.1%}')}" for l, d, a, b, _ in per)
            n_worst = need.loc[(model, worst[0]), "repeats_needed"] if (model, worst[0]) in need.index else math.nan
            out.append(assess(
                TOP_LAYERS_CLAIM,
                f"{model}, {name}, {at}: worst top layer {worst[0]} {worst[1]:.1%} of the clean {clean:.3f} lost "
                f"(relative drop per top layer: {each}){_needed_text(n_worst, worst[4])}.",
                source, quantity=f"relative {name} drop of the worst top layer", estimate=worst[1], lo=lo, hi=hi,
                interval=interval + ", max over the top layers", n=min(p[4] for p in per), threshold=max_drop,
                direction="<"))  # fmt: skip
        first = sub[sub["role"] == "conv1"]
        if first.empty:
            out.append(Finding(CONV1_CLAIM, f"{model}: no conv layer was perturbed.", "not tested", source))
            continue
        label = str(first["layer_label"].iloc[0])
        acc = first["accuracy"].to_numpy(float)
        if not clean > chance:
            out.append(Finding(CONV1_CLAIM, f"{model}, {name}, {at}: {label} {acc.mean():.3f}, but the clean accuracy "
                               f"{clean:.3f} is not above chance {chance:.3f}.", "not tested", source))  # fmt: skip
            continue
        way = (_mean_replicates(acc, n_boot, seed) - chance) / (clean - chance)
        lo, hi = percentile_interval(way, ci)
        a_lo, a_hi = percentile_interval(_mean_replicates(acc, n_boot, seed), ci)
        est = (acc.mean() - chance) / (clean - chance)
        n_need = need.loc[(model, label), "repeats_needed"] if (model, label) in need.index else math.nan
        out.append(assess(
            CONV1_CLAIM,
            f"{model}, {name}, {at}: {label} {format_interval(acc.mean(), a_lo, a_hi)} over {len(acc)} repeats "
            f"(s.d. {acc.std(ddof=1) if len(acc) > 1 else 0:.3f}; chance {chance:.3f}, clean {clean:.3f}: "
            f"{est:.0%} of the way from chance to clean; near chance means < {near_chance:.0%})"
            f"{_needed_text(n_need, len(acc))}.",
            source, quantity=f"{label} {name}, fraction of the way from chance to clean", estimate=est, lo=lo, hi=hi,
            interval=interval, n=len(acc), threshold=near_chance, direction="<"))  # fmt: skip
    return out
