"""The "Findings" block of the Pravin et al. 2024 report: how many layers each filtering score
calls fragile / robust / antifragile once the bootstrap interval over the evaluation images
is taken into account (:mod:`netperturb.studies.pravin2024.intervals`), and whether
residual-branch convolutions survive being filtered away."""

from __future__ import annotations

import numpy as np
import pandas as pd

from netperturb.core.findings import Finding, assess, format_interval, percentile_interval
from netperturb.studies.pravin2024.scores import CLASSES, SCORES

__all__ = ["CLASSES_CLAIM", "RESIDUAL_CLAIM", "findings", "reachable_classes"]

CLASSES_CLAIM = "Synaptic filtering sorts parameters into fragile, robust and antifragile ones"
RESIDUAL_CLAIM = "Residual-branch convolutions are robust: the identity shortcut carries the signal without them"


def reachable_classes(lo: float, hi: float, tolerance: float) -> set[str]:
    """The classes an interval ``[lo, hi]`` of a score reaches (fragile below ``-tolerance``,
    robust within, antifragile above); empty for NaN."""
    if lo != lo or hi != hi:
        return set()
    out = set()
    if lo < -tolerance:
        out.add("fragile")
    if hi > tolerance:
        out.add("antifragile")
    if hi >= -tolerance and lo <= tolerance:
        out.add("robust")
    return out


def _classes_finding(model: str, last: pd.DataFrame, tolerance: float, definition: str | None, source: str) -> Finding:
    """Classes at one checkpoint: lo = classes the intervals establish, hi = classes they reach."""
    with_iv = "lo" in last and last["lo"].notna().any()
    counts = last.groupby(["score", "class"]).size().unstack("class", fill_value=0)
    order = [*CLASSES, "undetermined"] if with_iv else list(CLASSES)
    parts = [f"{s}: " + ", ".join(f"{int(counts.loc[s].get(c, 0))} {c}" for c in order) for s in SCORES if s in counts.index]
    point = last["class_point"] if "class_point" in last else last["class"]
    est = len({c for c in point if c in CLASSES})
    head = f"{model}, epoch {int(last['epoch'].iloc[0])}, (layer, filter) pairs per score" + (f" ({definition})" if definition else "")
    if not with_iv:
        return Finding(CLASSES_CLAIM, f"{head} -- " + "; ".join(parts) + ". No interval (pravin2024.score.n_boot 0, or a "
                       "sweep table without per-image credits): the classes of point scores are not tested.",
                       "not tested", source, quantity="classes seen (point scores)", estimate=float(est))  # fmt: skip
    established = {c for c in last["class"] if c in CLASSES}
    reach = set().union(*(reachable_classes(lo, hi, tolerance) for lo, hi in zip(last["lo"], last["hi"])))
    n_img = int(last["n_images"].iloc[0]) if "n_images" in last and last["n_images"].notna().any() else 0
    return assess(
        CLASSES_CLAIM,
        f"{head}, a class only where the interval over images excludes the neighbouring classes -- " + "; ".join(parts)
        + f". Classes established by an interval: {sorted(established) or 'none'}; reached by some interval: "
        f"{sorted(reach) or 'none'}; of the point scores: {sorted({c for c in point if c in CLASSES})}.",
        source, quantity="classes among the (layer, filter, score) scores (of 3)", estimate=est, lo=len(established),
        hi=max(len(reach), len(established)), interval="lo: classes established by the score intervals over images; "
        "hi: classes any interval reaches", n=n_img, threshold=2.5, direction=">")  # fmt: skip


def findings(
    classes: pd.DataFrame,
    fully_filtered: pd.DataFrame,
    *,
    tolerance: float = 0.05,
    min_recovery: float = 0.9,
    recovery_replicates: dict | None = None,
    ci: float = 0.95,
    classes_source: str = "pravin2024/report/tables/classes.csv",
    filtered_source: str = "pravin2024/report/tables/fully_filtered.csv",
    definition: str | None = None,
) -> list[Finding]:
    """From the class table (:func:`~netperturb.studies.pravin2024.figures.class_table` of every
    model, with ``model``; from the pooled table it carries ``lo, hi`` and the interval class)
    and :func:`~netperturb.studies.pravin2024.figures.full_filter_table`, at each model's last
    checkpoint.

    - Classes: (layer, filter) counts per class and score. The estimate is the number of the
      three classes the point scores show; the claim is that all three occur (``> 2.5``). Its
      interval: ``lo`` = the classes some score's interval establishes (it excludes the
      neighbouring classes), ``hi`` = the classes some interval reaches. Holds when the
      intervals establish all three; does not hold when no interval reaches one of them;
      undetermined otherwise. ``definition`` (e.g. ``score.normalise / score.baseline``) is
      named in the text.
    - Residual: a residual-branch conv is robust when the network keeps at least
      ``min_recovery`` of its clean accuracy with that layer fully filtered (every weight
      zero). The estimate is the *worst* residual-branch conv's recovery, its interval the
      percentile interval of the minimum over those convs of each image resample
      (``recovery_replicates``: ``{(model, epoch): {layer: (B,) replicates}}``, from
      :func:`~netperturb.studies.pravin2024.intervals.recovery_replicates`); "not tested"
      without residual branches. Without replicates the recovery is not tested against its
      threshold (no interval).
    """
    out = []
    for model, sub in (classes.groupby("model", sort=False) if len(classes) else []):
        last = sub[sub["epoch"] == sub["epoch"].max()]
        out.append(_classes_finding(model, last, tolerance, definition, classes_source))
    for model, sub in (fully_filtered.groupby("model", sort=False) if len(fully_filtered) else []):
        last = sub[sub["epoch"] == sub["epoch"].max()]
        epoch = int(last["epoch"].iloc[0])
        res = last[last["role"] == "residual branch"]
        stem = last[last["role"] == "stem"]
        stem_txt = "; the stem " + ", ".join(f"{r.layer_label} keeps {r.recovery:.0%}" for r in stem.itertuples()) if len(stem) else ""
        if res.empty:
            out.append(Finding(RESIDUAL_CLAIM, f"{model} has no residual branch among the filtered layers{stem_txt}.",
                               "not tested", filtered_source))  # fmt: skip
            continue
        ok = res["recovery"] >= min_recovery
        worst = res.loc[res["recovery"].idxmin()]
        text = (f"{model}, epoch {epoch}: with one residual-branch conv fully filtered the network keeps >= "
                f"{min_recovery:.0%} of its clean accuracy for {int(ok.sum())} of {len(res)} convs (worst "
                f"{worst['layer_label']} {worst['recovery']:.0%}){stem_txt}")  # fmt: skip
        reps = (recovery_replicates or {}).get((model, epoch))
        if not reps or any(l not in reps for l in res["layer"]):
            out.append(Finding(RESIDUAL_CLAIM, text + "; no interval over images (no per-image credits).", "not tested",
                               filtered_source, quantity="recovery of the worst residual-branch conv",
                               estimate=float(worst["recovery"])))  # fmt: skip
            continue
        worst_reps = np.nanmin(np.stack([reps[l] for l in res["layer"]]), axis=0)
        lo, hi = (float(x) for x in percentile_interval(worst_reps, ci))
        each = ", ".join(f"{r.layer_label} {format_interval(r.recovery, *percentile_interval(reps[r.layer], ci), '{:.2f}')}"
                         for r in res.itertuples())  # fmt: skip
        n = int(last["n_images"].iloc[0]) if "n_images" in last and last["n_images"].notna().any() else 0
        out.append(assess(RESIDUAL_CLAIM, text + f"; recovery per conv: {each}.", filtered_source,
                          quantity="recovery of the worst residual-branch conv (filtered / unfiltered clean accuracy)",
                          estimate=float(worst["recovery"]), lo=lo, hi=hi,
                          interval=f"{ci:.0%} percentile bootstrap over evaluation images, min over the convs",
                          n=n, threshold=min_recovery, direction=">"))  # fmt: skip
    return out
