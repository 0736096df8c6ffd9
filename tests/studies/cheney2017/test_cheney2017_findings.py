"""The Findings of the Cheney et al. 2017 report on hand-made tables."""

import pandas as pd

from netperturb.studies.cheney2017.findings import CONV1_CLAIM, TOP_LAYERS_CLAIM, findings


def _table(acc_at_07: dict[str, float], model: str = "net") -> pd.DataFrame:
    """Synapse knockout at 0 and 0.7, two repeats; clean accuracy 0.9 everywhere."""
    rows = []
    for i, (label, acc) in enumerate(acc_at_07.items(), start=1):
        for level, a in ((0.0, 0.9), (0.7, acc)):
            for rep, d in enumerate((-0.01, 0.01)):
                rows.append({"model": model, "perturbation": "synapse_knockout", "layer": f"l{i}", "layer_label": label,
                             "layer_index": i, "level": level, "repeat": rep, "top1": a + d * (level > 0)})
    return pd.DataFrame(rows)


BASE = pd.DataFrame({"model": ["net"], "top1": [0.9]})


def test_holds_when_every_top_layer_drops_less_than_30_percent_and_conv1_is_near_chance():
    df = _table({"conv1": 0.12, "conv2": 0.5, "conv3": 0.85, "fc4": 0.8, "fc5": 0.7})
    top, conv1 = findings(df, BASE, num_classes=10, metric="top1")
    assert top.claim == TOP_LAYERS_CLAIM and conv1.claim == CONV1_CLAIM
    assert top.verdict == "holds"
    # worst top layer: fc5, 1 - 0.7 / 0.9 = 22.2 %; conv2 (neither first nor last conv) is not a top layer
    assert "worst top layer fc5 -22.2%" in top.found and "conv2" not in top.found
    assert "conv3 -5.6%" in top.found and "70% of the weights removed" in top.found
    assert conv1.verdict == "holds" and "conv1 0.120" in conv1.found and "chance 0.100" in conv1.found
    assert top.source == "cheney2017/perturbation.csv, cheney2017/baseline.csv"


def test_does_not_hold_names_the_worst_layer():
    df = _table({"conv1": 0.6, "conv2": 0.85, "fc3": 0.3})
    top, conv1 = findings(df, BASE, num_classes=10, metric="top1")
    assert top.verdict == "does not hold" and "worst top layer fc3 -66.7%" in top.found
    # (0.6 - 0.1) / (0.9 - 0.1) = 62 % of the way from chance to clean: not near chance
    assert conv1.verdict == "does not hold" and "62% of the way" in conv1.found


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
