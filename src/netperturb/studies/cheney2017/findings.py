"""The "Findings" block of the Cheney et al. 2017 report: the paper's headline checked on this
run's merged tables (synapse knockout at the drop level, top layers against conv1)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from netperturb.core.report import Finding
from netperturb.studies.cheney2017.figures import relative_drop

__all__ = ["TOP_LAYERS_CLAIM", "CONV1_CLAIM", "findings"]

TOP_LAYERS_CLAIM = "Removing >70% of the weights of the top conv or dense layers costs <30% of top-5 accuracy"
CONV1_CLAIM = "The same knockout in conv1 gives near-chance accuracy"
METRIC_NAMES = {"top1": "top-1", "top5": "top-5"}


def _split_layers(sub: pd.DataFrame) -> tuple[pd.Series | None, pd.DataFrame]:
    """(first conv row, top layers: the last conv unless it is the first, and every dense layer)."""
    sub = sub.sort_values("layer_index")
    convs = sub[sub["layer_label"].str.startswith("conv")]
    first = convs.iloc[0] if len(convs) else None
    top = sub[sub["layer_label"].str.startswith("fc")]
    if len(convs) > 1:
        top = pd.concat([convs.iloc[[-1]], top])
    return first, top


def findings(
    perturbation: pd.DataFrame,
    baseline: pd.DataFrame,
    *,
    num_classes: int,
    level: float = 0.7,
    metric: str = "top5",
    max_drop: float = 0.30,
    near_chance: float = 0.2,
    source: str = "cheney2017/perturbation.csv, cheney2017/baseline.csv",
) -> list[Finding]:
    """Two findings per model, from synapse knockout at the level nearest ``level``:

    - top layers (the last conv and the dense layers): the claim holds for a model when every
      top layer's relative drop ``1 - acc / clean`` (mean over repeats) is below ``max_drop``;
    - conv1 (the first conv): near chance when its accuracy is less than ``near_chance`` of
      the way from chance to clean accuracy.

    A model without such layers (or a run without synapse knockout) gets "not tested".
    ``metric`` is the report's metric; the paper measured top-5 on ImageNet.
    """
    name = METRIC_NAMES.get(metric, metric)
    chance = (1 / num_classes) if metric == "top1" else min(5, num_classes) / num_classes
    sk = perturbation[perturbation["perturbation"] == "synapse_knockout"]
    if sk.empty:
        return [Finding(TOP_LAYERS_CLAIM, "This run has no synapse knockout.", "not tested", source)]
    drop = relative_drop(sk, baseline, level=level, metric=metric)
    out = []
    for model, sub in drop.groupby("model", sort=False):
        first, top = _split_layers(sub)
        lv = float(sub["level_used"].iloc[0])
        at = f"{lv:.0%} of the weights removed" + ("" if lv >= 0.7 else " (the level nearest 70% on this grid)")
        if top.empty:
            out.append(Finding(TOP_LAYERS_CLAIM, f"{model}: no top conv or dense layer was perturbed.", "not tested", source))
        elif top["relative_drop"].isna().all():
            out.append(Finding(
                TOP_LAYERS_CLAIM,
                f"{model}, {name}: the clean {name} accuracy is {float(top['baseline'].iloc[0]):.3f}, so a relative drop "
                "is undefined.", "not tested", source))  # fmt: skip
        else:
            worst = top.loc[top["relative_drop"].idxmax()]
            each = ", ".join(f"{r.layer_label} {-r.relative_drop:+.1%}" for r in top.itertuples())
            ok = bool((top["relative_drop"].dropna() < max_drop).all())
            out.append(Finding(
                TOP_LAYERS_CLAIM,
                f"{model}, {name}, {at}: worst top layer {worst['layer_label']} {-worst['relative_drop']:+.1%} "
                f"(relative to clean {worst['baseline']:.3f}" + (f"; {each})." if len(top) > 1 else ")."),
                "holds" if ok else "does not hold", source))  # fmt: skip
        if first is None:
            out.append(Finding(CONV1_CLAIM, f"{model}: no conv layer was perturbed.", "not tested", source))
            continue
        clean = float(first["baseline"])
        way = (float(first["accuracy"]) - chance) / (clean - chance) if clean > chance else np.nan
        out.append(Finding(
            CONV1_CLAIM,
            f"{model}, {name}, {at}: {first['layer_label']} {first['accuracy']:.3f} (chance {chance:.3f}, clean {clean:.3f}: "
            f"{way:.0%} of the way from chance to clean; near chance means < {near_chance:.0%}).",
            "not tested" if np.isnan(way) else "holds" if way < near_chance else "does not hold", source))  # fmt: skip
    return out
