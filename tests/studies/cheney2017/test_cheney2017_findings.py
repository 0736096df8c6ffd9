"""The Findings of the Cheney et al. 2017 report on hand-made tables: intervals over repeats, the
verdicts they imply, the power helper and the extra repeats at the findings' level."""

import math

import numpy as np
import pandas as pd
import pytest

from netperturb.studies.cheney2017.figures import relative_drop, summarize
from netperturb.studies.cheney2017.findings import CONV1_CLAIM, TOP_LAYERS_CLAIM, finding_cells, findings, repeats_table


def _table(acc_at_07: dict[str, float | list[float]], model: str = "net", spread=(-0.01, 0.01)) -> pd.DataFrame:
    """Synapse knockout at 0 and 0.7; clean accuracy 0.9 everywhere; at 0.7 a value +- spread, or
    the given repeats."""
    rows = []
    for i, (label, acc) in enumerate(acc_at_07.items(), start=1):
        for level in (0.0, 0.7):
            values = [0.9] * 2 if level == 0 else (list(acc) if isinstance(acc, list) else [acc + d for d in spread])
            for rep, a in enumerate(values):
                rows.append({"model": model, "perturbation": "synapse_knockout", "layer": f"l{i}", "layer_label": label,
                             "layer_index": i, "level": level, "repeat": rep, "top1": a})  # fmt: skip
    return pd.DataFrame(rows)


BASE = pd.DataFrame({"model": ["net"], "top1": [0.9]})


def test_holds_when_the_intervals_clear_the_thresholds():
    df = _table({"conv1": 0.12, "conv2": 0.5, "conv3": 0.85, "fc4": 0.8, "fc5": 0.7})
    top, conv1 = findings(df, BASE, num_classes=10, metric="top1", n_boot=500)
    assert top.claim == TOP_LAYERS_CLAIM and conv1.claim == CONV1_CLAIM
    assert top.verdict == "holds" and top.threshold == 0.3 and top.direction == "<" and top.n == 2
    # worst top layer: fc5, 1 - 0.7 / 0.9 = 22.2 %; conv2 (neither first nor last conv) is not a top layer
    assert top.estimate == pytest.approx(1 - 0.7 / 0.9) and top.lo <= top.estimate <= top.hi < 0.3
    assert "worst top layer fc5 22.2%" in top.found and "conv2" not in top.found
    assert "conv3 5.6%" in top.found and "70% of the weights removed" in top.found
    # conv1 0.12: (0.12 - 0.1) / (0.9 - 0.1) = 2.5% of the way from chance to clean
    assert conv1.verdict == "holds" and conv1.estimate == pytest.approx(0.025) and conv1.hi < 0.2
    assert "conv1 0.120" in conv1.found and "chance 0.100" in conv1.found and "bootstrap over repeats" in conv1.interval
    assert top.source == "cheney2017/perturbation.csv, cheney2017/baseline.csv"


def test_does_not_hold_names_the_worst_layer():
    df = _table({"conv1": 0.6, "conv2": 0.85, "fc3": 0.3})
    top, conv1 = findings(df, BASE, num_classes=10, metric="top1", n_boot=500)
    assert top.verdict == "does not hold" and "worst top layer fc3 66.7%" in top.found
    # (0.6 - 0.1) / (0.9 - 0.1) = 62 % of the way from chance to clean: not near chance
    assert conv1.verdict == "does not hold" and "62% of the way" in conv1.found


def test_a_spread_that_straddles_near_chance_is_undetermined_and_says_how_many_repeats():
    # conv1 repeats 0.10 .. 0.40 (as the digit AlexNet's flipped between 0.125 and 0.352): mean 0.25,
    # (0.25 - 0.1) / 0.8 = 18.75% of the way: below 20% but the interval reaches far beyond
    reps = [0.10, 0.40, 0.15, 0.35, 0.25]
    df = _table({"conv1": reps, "fc2": 0.85})
    top, conv1 = findings(df, BASE, num_classes=10, metric="top1", n_boot=1000)
    assert conv1.estimate == pytest.approx(0.1875) and conv1.lo < 0.2 < conv1.hi and conv1.verdict == "undetermined"
    need = repeats_table(finding_cells(df, BASE, num_classes=10, metric="top1")).set_index("layer_label")
    way = (np.array(reps) - 0.1) / 0.8
    n = need.loc["conv1", "repeats_needed"]
    assert need.loc["conv1", "sd"] == pytest.approx(way.std(ddof=1)) and n > 5
    assert f"about {int(n)} repeats would be needed" in conv1.found
    assert need.loc["fc2", "repeats_needed"] <= 2  # 5.6% drop +- 1%: far from 30%


def test_nearest_level_is_reported_and_missing_layers_are_not_tested():
    df = _table({"fc1": 0.85})
    df.loc[df["level"] == 0.7, "level"] = 0.5
    top, conv1 = findings(df, BASE, num_classes=10, metric="top1")
    assert top.verdict == "holds" and "50% of the weights removed (the level nearest 70%" in top.found
    assert conv1.verdict == "not tested"
    (only,) = findings(df.assign(perturbation="node_knockout"), BASE, num_classes=10, metric="top1")
    assert only.verdict == "not tested"


def test_zero_clean_accuracy_is_not_tested_rather_than_an_error():
    """A random network can score 0 on a handful of images (the tiny paper config): the relative
    drop 1 - acc / 0 is undefined, and the finding says so instead of raising."""
    df = _table({"conv1": 0.0, "conv2": 0.0, "fc3": 0.0})
    top, conv1 = findings(df, BASE.assign(top1=0.0), num_classes=10, metric="top1")
    assert top.verdict == "not tested" and "clean top-1 accuracy is 0.000" in top.found
    assert conv1.verdict == "not tested"


def test_every_plotted_mean_has_its_bootstrap_interval():
    df = _table({"conv1": [0.1, 0.3, 0.2], "fc2": 0.8})
    s = summarize(df, "top1", n_boot=500).set_index(["layer_label", "level"])
    assert s.loc[("conv1", 0.7), "mean"] == pytest.approx(0.2) and s.loc[("conv1", 0.7), "n"] == 3
    assert 0.1 <= s.loc[("conv1", 0.7), "lo"] < 0.2 < s.loc[("conv1", 0.7), "hi"] <= 0.3
    assert s.loc[("conv1", 0.0), "lo"] == s.loc[("conv1", 0.0), "hi"] == 0.9  # identical repeats: a point
    d = relative_drop(df, BASE, level=0.7, n_boot=500).set_index("layer_label")
    assert d.loc["conv1", "n_repeats"] == 3 and d.loc["conv1", "drop_lo"] <= d.loc["conv1", "relative_drop"] <= d.loc["conv1", "drop_hi"]
    assert d.loc["conv1", "drop_lo"] == pytest.approx(1 - d.loc["conv1", "accuracy_hi"] / 0.9)
    assert not math.isnan(d.loc["fc2", "drop_hi"])
