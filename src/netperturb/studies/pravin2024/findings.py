"""The "Findings" block of the Pravin et al. 2024 report: how many layers each filtering score
calls fragile / robust / antifragile, and whether residual-branch convolutions survive being
filtered away."""

from __future__ import annotations

import pandas as pd

from netperturb.core.report import Finding
from netperturb.studies.pravin2024.scores import CLASSES, SCORES

__all__ = ["CLASSES_CLAIM", "RESIDUAL_CLAIM", "findings"]

CLASSES_CLAIM = "Synaptic filtering sorts parameters into fragile, robust and antifragile ones"
RESIDUAL_CLAIM = "Residual-branch convolutions are robust: the identity shortcut carries the signal without them"


def findings(
    classes: pd.DataFrame,
    fully_filtered: pd.DataFrame,
    *,
    min_recovery: float = 0.9,
    classes_source: str = "pravin2024/report/tables/classes.csv",
    filtered_source: str = "pravin2024/report/tables/fully_filtered.csv",
    definition: str | None = None,
) -> list[Finding]:
    """From the class table (:func:`~netperturb.studies.pravin2024.figures.class_table` of every
    model, with ``model``) and :func:`~netperturb.studies.pravin2024.figures.full_filter_table`,
    at each model's last checkpoint.

    - Classes: (layer, filter) counts per class and score; holds when all three classes occur,
      mixed when two do, does not hold when one does. ``definition`` (e.g. the configured
      ``score.normalise / score.baseline``) is named in the text.
    - Residual: a residual-branch conv is robust when the network keeps at least
      ``min_recovery`` of its clean accuracy with that layer fully filtered (every weight zero);
      holds when all are, mixed when some are, "not tested" without residual branches.
    """
    out = []
    for model, sub in (classes.groupby("model", sort=False) if len(classes) else []):
        last = sub[sub["epoch"] == sub["epoch"].max()]
        counts = last.groupby(["score", "class"]).size().unstack("class", fill_value=0)
        parts = [f"{s}: " + ", ".join(f"{int(counts.loc[s].get(c, 0))} {c}" for c in CLASSES)
                 for s in SCORES if s in counts.index]  # fmt: skip
        seen = [c for c in CLASSES if c in counts.columns and counts[c].sum() > 0]
        verdict = {3: "holds", 2: "mixed"}.get(len(seen), "does not hold")
        out.append(Finding(CLASSES_CLAIM,
                           f"{model}, epoch {int(last['epoch'].iloc[0])}, (layer, filter) pairs per score"
                           + (f" ({definition})" if definition else "") + " -- " + "; ".join(parts) + ".",
                           verdict, classes_source))  # fmt: skip
    for model, sub in (fully_filtered.groupby("model", sort=False) if len(fully_filtered) else []):
        last = sub[sub["epoch"] == sub["epoch"].max()]
        res = last[last["role"] == "residual branch"]
        stem = last[last["role"] == "stem"]
        stem_txt = "; the stem " + ", ".join(f"{r.layer_label} keeps {r.recovery:.0%}" for r in stem.itertuples()) if len(stem) else ""
        if res.empty:
            out.append(Finding(RESIDUAL_CLAIM, f"{model} has no residual branch among the filtered layers{stem_txt}.",
                               "not tested", filtered_source))  # fmt: skip
            continue
        ok = res["recovery"] >= min_recovery
        worst = res.loc[res["recovery"].idxmin()]
        verdict = "holds" if ok.all() else "mixed" if ok.any() else "does not hold"
        out.append(Finding(RESIDUAL_CLAIM,
                           f"{model}, epoch {int(last['epoch'].iloc[0])}: with one residual-branch conv fully filtered the network "
                           f"keeps >= {min_recovery:.0%} of its clean accuracy for {int(ok.sum())} of {len(res)} convs "
                           f"(worst {worst['layer_label']} {worst['recovery']:.0%}){stem_txt}.",
                           verdict, filtered_source))  # fmt: skip
    return out
