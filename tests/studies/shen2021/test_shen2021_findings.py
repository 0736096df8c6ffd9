"""The Findings of the Shen et al. 2021 report on hand-made tables."""

import numpy as np
import pandas as pd

from netperturb.studies.shen2021.findings import CORRELATION_CLAIM, FALL_CLAIM, findings


def _change(n_fell: dict[str, int], lam: float = 0) -> pd.DataFrame:
    return pd.DataFrame([{"lam": lam, "layer_index": i, "layer_label": k, "n_seeds": 3, "n_fell": v,
                          "F0_mean": 0.5, "Fend_mean": 0.4 if v >= 2 else 0.55} for i, (k, v) in enumerate(n_fell.items(), 1)])


def _corr(r: float, p: float, attack: str = "fgsm") -> pd.DataFrame:
    return pd.DataFrame([{"attack": attack, "eps": 0.1, "subset": "all runs", "n": 12, "pearson_r": r, "pearson_p": p,
                          "spearman_rho": r, "spearman_p": p},
                         {"attack": attack, "eps": 0.1, "subset": "lam=0", "n": 3, "pearson_r": 0.9, "pearson_p": 0.01,
                          "spearman_rho": 1.0, "spearman_p": 0.0}])


def test_fall_holds_mixed_does_not_hold_on_conv_layers():
    (fall, corr) = findings(_change({"conv1": 3, "conv2": 2, "fc3": 0}), _corr(-0.8, 0.001))
    assert fall.claim == FALL_CLAIM and fall.verdict == "holds"
    assert "conv1 0.500 -> 0.400 (fell, 3/3 seeds)" in fall.found and "fc3 0.500 -> 0.550 (did not fall, 0/3 seeds)" in fall.found
    assert fall.source.endswith("fuzziness_change_readings.csv")
    assert findings(_change({"conv1": 3, "conv2": 1}), _corr(-0.8, 0.001))[0].verdict == "mixed"
    assert findings(_change({"conv1": 0, "conv2": 1, "fc3": 3}), _corr(-0.8, 0.001))[0].verdict == "does not hold"
    assert findings(_change({"conv1": 3}, lam=2), _corr(-0.8, 0.001))[0].verdict == "not tested"


def test_correlation_verdict_uses_all_runs_sign_and_p_value():
    corr = findings(_change({"conv1": 3}), _corr(-0.8, 0.001))[1]
    assert corr.claim == CORRELATION_CLAIM and corr.verdict == "holds"
    assert "fgsm at eps 0.1, 12 runs" in corr.found and "r = -0.80" in corr.found
    assert findings(_change({"conv1": 3}), _corr(0.7, 0.01))[1].verdict == "does not hold"
    assert findings(_change({"conv1": 3}), _corr(-0.3, 0.4))[1].verdict == "not shown"
    assert findings(_change({"conv1": 3}), _corr(np.nan, np.nan))[1].verdict == "not tested"
    two = pd.concat([_corr(-0.8, 0.001, "fgsm"), _corr(0.1, 0.7, "pgd")])
    assert [f.verdict for f in findings(_change({"conv1": 3}), two)[1:]] == ["holds", "not shown"]
