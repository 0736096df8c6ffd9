"""Filtering scores: hand-made curves against hand-computed integrals; classes; selection.

These pin the ``normalise: clean`` / ``baseline: constant`` option (``OURS``); the authors'
definition (the default) is pinned in test_fidelity.py."""

import math

import numpy as np
import pandas as pd
import pytest

from netperturb.studies.pravin2024.scores import classify, filtering_score, filtering_scores, retraining_selection

OURS = {"normalise": "clean", "baseline": "constant"}


def test_simpson_score_of_hand_made_curves():
    # linear drop to 0: integral of (1 - t) - 1 over [0, 1] = -1/2
    assert filtering_score([0, 0.5, 1], [1, 0.5, 0], 1.0) == pytest.approx(-0.5, abs=1e-15)
    # quadratic: integral of -t^2 = -1/3 (Simpson is exact for cubics)
    t = np.linspace(0, 1, 5)
    assert filtering_score(t, 1 - t**2, 1.0) == pytest.approx(-1 / 3, abs=1e-15)
    # a curve above its baseline: integral of t^3 = 1/4
    assert filtering_score(t, 0.2 + t**3, 0.2) == pytest.approx(0.25, abs=1e-15)
    # per-position baseline
    assert filtering_score(t, t, t) == 0.0
    assert math.isnan(filtering_score([0, 1], [1, math.nan], 1.0))
    with pytest.raises(ValueError):
        filtering_score([0, 1, 0.5], [1, 1, 1], 1.0)
    with pytest.raises(ValueError):
        filtering_score([0], [1], 1.0)


def test_classes_with_tolerance():
    assert classify(-0.051, 0.05) == "fragile"
    assert classify(-0.05, 0.05) == "robust" and classify(0.05, 0.05) == "robust"
    assert classify(0.0500001, 0.05) == "antifragile"
    assert classify(0.0, 0.0) == "robust"
    assert classify(math.nan, 0.05) == "undefined"


def _sweep(curves, a_c=0.8, a_a=0.4, steps=5, layer="conv1", index=1, perturbation="filter_low", epoch=3):
    """Rows of a sweep table for one curve: curves = {"clean": f(t), "adversarial": g(t)}."""
    t = np.linspace(0, 1, steps)
    rows = []
    for data, f in curves.items():
        for i, ti in enumerate(t):
            rows.append({"study": "s", "dataset": "d", "model": "m", "arch": "a", "init": 0, "epoch": epoch,
                         "mode": "layer", "layer": layer, "layer_label": layer, "layer_index": index,
                         "perturbation": perturbation, "position": ti, "step": i, "data": data, "top1": f(ti)})  # fmt: skip
    base = pd.DataFrame([{"model": "m", "init": 0, "epoch": epoch, "data": "clean", "top1": a_c},
                         {"model": "m", "init": 0, "epoch": epoch, "data": "adversarial", "top1": a_a}])  # fmt: skip
    return pd.DataFrame(rows), base


def test_three_scores_of_a_hand_made_sweep():
    # clean falls linearly from A_c = 0.8 to 0; adversarial stays at A_a = 0.4
    sw, base = _sweep({"clean": lambda t: 0.8 * (1 - t), "adversarial": lambda t: 0.4})
    s = filtering_scores(sw, base, tolerance=0.05, **OURS).set_index("score")
    # f_clean = int (0.8(1-t) - 0.8) / 0.8 = -1/2; f_adv = 0; f_diff = f_adv - f_clean = 1/2
    assert s.loc["clean", "value"] == pytest.approx(-0.5, abs=1e-12)
    assert s.loc["adversarial", "value"] == pytest.approx(0.0, abs=1e-12)
    assert s.loc["difference", "value"] == pytest.approx(0.5, abs=1e-12)
    assert list(s["class"]) == ["fragile", "robust", "antifragile"]
    assert set(s["filter"]) == {"low"} and (s["n_points"] == 5).all()
    assert (s["baseline_clean"] == 0.8).all() and (s["baseline_adversarial"] == 0.4).all()


def test_adversarial_score_is_normalised_by_the_clean_baseline():
    # adversarial rises from A_a = 0.2 to 0.6 linearly: int (0.4 t) dt / A_c = 0.2 / 0.5 = 0.4
    sw, base = _sweep({"clean": lambda t: 0.5, "adversarial": lambda t: 0.2 + 0.4 * t}, a_c=0.5, a_a=0.2)
    s = filtering_scores(sw, base, tolerance=0.1, **OURS).set_index("score")
    assert s.loc["clean", "value"] == pytest.approx(0.0, abs=1e-12)
    assert s.loc["adversarial", "value"] == pytest.approx(0.4, abs=1e-12)
    assert s.loc["difference", "value"] == pytest.approx(0.4, abs=1e-12)
    assert s.loc["adversarial", "class"] == "antifragile"


def test_missing_baseline_is_an_error():
    sw, base = _sweep({"clean": lambda t: 0.5, "adversarial": lambda t: 0.2})
    with pytest.raises(ValueError, match="no baseline for model m init 0 epoch 3"):
        filtering_scores(sw, base.assign(epoch=4), **OURS)


def test_retraining_selection_by_filter_and_mean():
    parts = [
        _sweep({"clean": lambda t: 0.8, "adversarial": lambda t: 0.4}, layer="conv1", index=1, perturbation="filter_low"),
        _sweep({"clean": lambda t: 0.8, "adversarial": lambda t: 0.4 * (1 - t)}, layer="conv1", index=1, perturbation="filter_high"),
        _sweep({"clean": lambda t: 0.8, "adversarial": lambda t: 0.4 + 0.2 * t}, layer="fc2", index=2, perturbation="filter_low"),
        _sweep({"clean": lambda t: 0.8, "adversarial": lambda t: 0.4}, layer="fc2", index=2, perturbation="filter_high"),
    ]  # fmt: skip
    sw = pd.concat([p[0] for p in parts])
    scores = filtering_scores(sw, parts[0][1], tolerance=0.05, **OURS)
    # conv1: low 0, high -0.25 (mean -0.125: fragile); fc2: low +0.125, high 0 (mean 0.0625: antifragile)
    sel = retraining_selection(scores, model="m", init=0, epoch=3, score="adversarial", filter="mean", tolerance=0.05)
    assert sel.set_index("layer")["value"].to_dict() == pytest.approx({"conv1": -0.125, "fc2": 0.0625})
    assert sel.set_index("layer")["selected"].to_dict() == {"conv1": False, "fc2": True}
    sel = retraining_selection(scores, model="m", init=0, epoch=3, score="adversarial", filter="low", tolerance=0.05)
    assert sel.set_index("layer")["class"].to_dict() == {"conv1": "robust", "fc2": "antifragile"}
    assert sel["selected"].all()
    with pytest.raises(ValueError, match="no per-layer"):
        retraining_selection(scores, model="m", init=1, epoch=3)


def test_layer_roles_and_the_fully_filtered_table():
    from netperturb.studies.pravin2024.figures import full_filter_table, layer_role

    assert [layer_role(p, i) for p, i in [("conv1", 1), ("layer1.0.conv2", 3), ("layer2.0.downsample.0", 7),
                                          ("fc", 21), ("features.3", 2)]] == [
        "stem", "residual branch", "shortcut", "classifier", "other"]  # fmt: skip
    rows = []
    for label, path, idx, end in [("conv1", "conv1", 1, 0.1), ("conv2", "layer1.0.conv1", 2, 0.9)]:
        for step, pos in enumerate([0.0, 0.5, 1.0]):
            for data, acc in (("clean", end if pos == 1 else 0.8), ("adversarial", 0.3)):
                rows.append({"model": "m", "epoch": 1, "mode": "layer", "perturbation": "filter_low", "layer": path,
                             "layer_label": label, "layer_index": idx, "position": pos, "step": step, "data": data,
                             "init": 0, "top1": acc})  # fmt: skip
    base = pd.DataFrame([{"model": "m", "epoch": 1, "data": "clean", "top1": 0.8}, {"model": "m", "epoch": 1, "data": "adversarial", "top1": 0.4}])
    t = full_filter_table(pd.DataFrame(rows), base)
    assert t["clean"].tolist() == [0.1, 0.9] and t["role"].tolist() == ["stem", "residual branch"]
    assert t["recovery"].tolist() == pytest.approx([0.125, 1.125]) and (t["unfiltered_adversarial"] == 0.4).all()
