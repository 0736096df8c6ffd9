"""The Findings of the Pravin et al. 2024 report on hand-made tables."""

import pandas as pd

from netperturb.studies.pravin2024.findings import CLASSES_CLAIM, RESIDUAL_CLAIM, findings


def _classes(cls_by_score: dict[str, list[str]], model: str = "resnet18") -> pd.DataFrame:
    rows = [{"model": model, "perturbation": "filter_low", "score": s, "layer_index": i, "layer_label": f"conv{i}",
             "epoch": e, "class": c if e == 4 else "robust"}
            for s, cs in cls_by_score.items() for i, c in enumerate(cs, 1) for e in (2, 4)]
    return pd.DataFrame(rows)


def _full(recovery: dict[tuple[str, str], float], model: str = "resnet18") -> pd.DataFrame:
    return pd.DataFrame([{"model": model, "epoch": 4, "layer_label": lab, "layer_index": i, "role": role, "recovery": r}
                         for i, ((lab, role), r) in enumerate(recovery.items(), 1)])


def test_class_counts_per_score_at_the_last_checkpoint():
    cl = _classes({"clean": ["fragile", "robust", "robust"], "adversarial": ["antifragile", "robust", "robust"],
                   "difference": ["robust"] * 3})
    f = findings(cl, pd.DataFrame())
    assert len(f) == 1 and f[0].claim == CLASSES_CLAIM and f[0].verdict == "holds"
    assert "epoch 4" in f[0].found
    assert "clean: 1 fragile, 2 robust, 0 antifragile" in f[0].found
    assert "adversarial: 0 fragile, 2 robust, 1 antifragile" in f[0].found
    assert findings(_classes({"clean": ["fragile", "robust"]}), pd.DataFrame())[0].verdict == "mixed"
    assert findings(_classes({"clean": ["robust", "robust"]}), pd.DataFrame())[0].verdict == "does not hold"


def test_residual_convs_robust_when_the_network_keeps_90_percent():
    cl = _classes({"clean": ["robust"]})
    full = _full({("conv1", "stem"): 0.1, ("conv2", "residual branch"): 0.97, ("conv3", "residual branch"): 0.92,
                  ("fc", "classifier"): 0.1})
    res = findings(cl, full)[1]
    assert res.claim == RESIDUAL_CLAIM and res.verdict == "holds"
    assert "2 of 2 convs" in res.found and "worst conv3 92%" in res.found and "the stem conv1 keeps 10%" in res.found
    full.loc[full["layer_label"] == "conv3", "recovery"] = 0.5
    assert findings(cl, full)[1].verdict == "mixed"
    lenet = _full({("conv1", "stem"): 0.1, ("fc5", "classifier"): 0.2}, model="lenet5")
    assert findings(cl.assign(model="lenet5"), lenet)[1].verdict == "not tested"
