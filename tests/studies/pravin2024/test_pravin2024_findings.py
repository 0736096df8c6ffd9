"""The Findings of the Pravin et al. 2024 report on hand-made tables: the verdicts come from the
intervals over the evaluation images (planted effects hold, straddling intervals are
undetermined)."""

import numpy as np
import pandas as pd

from netperturb.studies.pravin2024.findings import CLASSES_CLAIM, RESIDUAL_CLAIM, findings, reachable_classes
from netperturb.studies.pravin2024.intervals import classify_interval
from netperturb.studies.pravin2024.scores import classify

TOL = 0.05


def _classes(intervals: dict[str, list[tuple[float, float, float]]], model: str = "resnet18") -> pd.DataFrame:
    """score -> [(value, lo, hi) per layer]; epoch 2 everything robust, epoch 4 as given."""
    rows = []
    for s, layers in intervals.items():
        for i, (v, lo, hi) in enumerate(layers, 1):
            for e in (2, 4):
                v_, lo_, hi_ = (v, lo, hi) if e == 4 else (0.0, -0.01, 0.01)
                rows.append({"model": model, "perturbation": "filter_low", "score": s, "layer_index": i,
                             "layer_label": f"conv{i}", "epoch": e, "value": v_, "lo": lo_, "hi": hi_,
                             "class": classify_interval(lo_, hi_, TOL), "class_point": classify(v_, TOL), "n_inits": 1,
                             "n_images": 100})  # fmt: skip
    return pd.DataFrame(rows)


def test_all_three_classes_established_by_their_intervals_hold():
    cl = _classes({"clean": [(-0.3, -0.4, -0.2), (0.0, -0.02, 0.03)], "adversarial": [(0.3, 0.2, 0.4)]})
    (f,) = findings(cl, pd.DataFrame(), tolerance=TOL)
    assert f.claim == CLASSES_CLAIM and f.verdict == "holds" and (f.estimate, f.lo, f.hi) == (3, 3, 3)
    assert "epoch 4" in f.found and "clean: 1 fragile, 1 robust, 0 antifragile, 0 undetermined" in f.found
    assert f.n == 100 and f.threshold == 2.5 and f.direction == ">"


def test_point_classes_without_interval_support_are_undetermined():
    # the point scores show all three classes, but the fragile one's interval reaches into robust
    cl = _classes({"clean": [(-0.07, -0.12, -0.02), (0.0, -0.02, 0.03)], "adversarial": [(0.3, 0.2, 0.4)]})
    (f,) = findings(cl, pd.DataFrame(), tolerance=TOL)
    assert f.estimate == 3 and f.lo == 2 and f.hi == 3 and f.verdict == "undetermined"
    assert "1 undetermined" in f.found


def test_a_null_where_no_interval_leaves_the_robust_band_does_not_hold():
    cl = _classes({"clean": [(0.0, -0.03, 0.03), (0.01, -0.02, 0.04)], "difference": [(0.0, -0.01, 0.01)]})
    (f,) = findings(cl, pd.DataFrame(), tolerance=TOL)
    assert f.verdict == "does not hold" and f.hi == 1


def test_without_intervals_the_classes_are_not_tested():
    cl = _classes({"clean": [(-0.3, np.nan, np.nan)]})
    (f,) = findings(cl, pd.DataFrame(), tolerance=TOL)
    assert f.verdict == "not tested" and "No interval" in f.found


def test_reachable_classes():
    assert reachable_classes(-0.1, 0.0, TOL) == {"fragile", "robust"}
    assert reachable_classes(-0.1, 0.1, TOL) == {"fragile", "robust", "antifragile"}
    assert reachable_classes(0.06, 0.1, TOL) == {"antifragile"}
    assert reachable_classes(np.nan, 0.1, TOL) == set()


def _full(recovery: dict[tuple[str, str], float], model: str = "resnet18") -> pd.DataFrame:
    return pd.DataFrame([{"model": model, "epoch": 4, "layer": lab, "layer_label": lab, "layer_index": i, "role": role,
                          "recovery": r, "n_images": 100} for i, ((lab, role), r) in enumerate(recovery.items(), 1)])


def _reps(values: dict[str, tuple[float, float]], b: int = 1000) -> dict:
    """Replicates uniform on [lo, hi] per layer (a planted interval)."""
    rng = np.random.default_rng(0)
    return {("resnet18", 4): {k: rng.uniform(lo, hi, b) for k, (lo, hi) in values.items()}}


def test_residual_convs_robust_when_the_worst_interval_clears_90_percent():
    cl = _classes({"clean": [(0.0, -0.01, 0.01)]})
    full = _full({("conv1", "stem"): 0.1, ("conv2", "residual branch"): 0.97, ("conv3", "residual branch"): 0.95,
                  ("fc", "classifier"): 0.1})
    res = findings(cl, full, recovery_replicates=_reps({"conv2": (0.95, 0.99), "conv3": (0.93, 0.97)}))[1]
    assert res.claim == RESIDUAL_CLAIM and res.verdict == "holds"
    assert 0.93 <= res.lo < 0.94 and res.estimate == 0.95 and res.threshold == 0.9
    assert "2 of 2 convs" in res.found and "worst conv3 95%" in res.found and "the stem conv1 keeps 10%" in res.found
    # straddling the threshold: undetermined; clearly below: does not hold
    assert findings(cl, full, recovery_replicates=_reps({"conv2": (0.95, 0.99), "conv3": (0.85, 0.97)}))[1].verdict == "undetermined"
    full.loc[full["layer_label"] == "conv3", "recovery"] = 0.5
    assert findings(cl, full, recovery_replicates=_reps({"conv2": (0.95, 0.99), "conv3": (0.4, 0.6)}))[1].verdict == "does not hold"
    # no replicates: no interval, not tested against the threshold
    assert findings(cl, full)[1].verdict == "not tested"
    lenet = _full({("conv1", "stem"): 0.1, ("fc5", "classifier"): 0.2}, model="lenet5")
    assert findings(cl.assign(model="lenet5"), lenet)[1].verdict == "not tested"
