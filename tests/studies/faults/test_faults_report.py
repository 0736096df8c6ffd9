"""The fault report's numbers against hand-made tables: half-accuracy rate, bootstrap interval,
fp32 vs int8, bit positions, findings."""

import numpy as np
import pandas as pd
import pytest

from netperturb.studies.faults.figures import bit_positions_table, compare_at_rate, half_rate, vulnerability
from netperturb.studies.faults.findings import EXPONENT_CLAIM, INT8_CLAIM, LAYER_CLAIM, findings

LEVELS = [0.0, 1e-4, 1e-3, 1e-2]


def test_half_rate_interpolates_in_log_rate():
    lv = np.array([1e-4, 1e-3, 1e-2])
    # clean 0.8, half 0.4: between 1e-3 (0.6) and 1e-2 (0.2), halfway -> 10 ** -2.5
    assert half_rate(lv, [0.8, 0.6, 0.2], 0.8)[0] == pytest.approx(10**-2.5)
    assert half_rate(lv, [0.3, 0.2, 0.1], 0.8)[0] == 1e-4  # already below at the first level
    assert np.isinf(half_rate(lv, [0.8, 0.7, 0.5], 0.8)[0])  # never
    assert half_rate(lv, [[0.8, 0.6, 0.2], [0.8, 0.4, 0.1]], 0.8).tolist() == pytest.approx([10**-2.5, 1e-3])


def table(rows):
    cols = dict(study="t", dataset="d", arch="a", seed=0, n_images=100, top5=1.0, loss=0.0, sdc5=0.0,
                weights="w", precision="fp32", device="cpu", netperturb_version="0")  # fmt: skip
    return pd.DataFrame([{**cols, **r} for r in rows])


def grid(variant, fmt, bits, layer, index, curve, reference="fp32", fault="bit_flip", repeats=3, jitter=0.0):
    rows = []
    for lv, acc in zip(LEVELS, curve):
        for r in range(repeats):
            rows.append(dict(model="m", layer=layer, layer_label=layer, layer_index=index, perturbation=variant,
                             level=lv, repeat=r, top1=acc + jitter * (r - 1) * (lv > 0), sdc1=0.0, due=0.0,
                             fault=fault, target="weights", format=fmt, bits=bits, reference=reference))  # fmt: skip
    return rows


BASE = table([dict(model="m", layer="", layer_label="", layer_index=0, perturbation="none", level=0, repeat=0,
                   top1=0.8, sdc1=0, due=0, fault="none", target="", format=f, bits="", reference=ref)
              for f, ref in (("fp32", "fp32"), ("int8", "int8_channel"))])  # fmt: skip


def test_vulnerability_ranks_layers_with_bootstrap_intervals():
    df = table(grid("w", "fp32", "all", "conv1", 1, [0.8, 0.8, 0.6, 0.2], jitter=0.02)
               + grid("w", "fp32", "all", "fc6", 2, [0.8, 0.3, 0.1, 0.1]))  # fmt: skip
    v = vulnerability(df, BASE, n_boot=300)
    assert v["layer"].tolist() == ["fc6", "conv1"] and v["rank"].tolist() == [1, 2]
    fc6, conv1 = v.iloc[0], v.iloc[1]
    assert fc6["half_rate"] == 1e-4 and fc6["censored"] == "below grid" and fc6["lo"] == fc6["hi"] == 1e-4
    assert conv1["half_rate"] == pytest.approx(10**-2.5) and conv1["lo"] < conv1["half_rate"] < conv1["hi"]


def test_compare_bit_positions_and_findings():
    df = table(
        grid("fp32_word", "fp32", "all", "conv1", 1, [0.8, 0.8, 0.4, 0.1])
        + grid("fp32_word", "fp32", "all", "fc6", 2, [0.8, 0.3, 0.1, 0.1])
        + grid("fp32_exp", "fp32", "exponent", "conv1", 1, [0.8, 0.8, 0.42, 0.1])
        + grid("fp32_exp", "fp32", "exponent", "fc6", 2, [0.8, 0.3, 0.1, 0.1])
        + grid("fp32_man", "fp32", "mantissa", "conv1", 1, [0.8, 0.8, 0.8, 0.8])
        + grid("int8_word", "int8", "all", "conv1", 1, [0.8, 0.8, 0.79, 0.7], reference="int8_channel")
        + grid("int8_word", "int8", "all", "fc6", 2, [0.8, 0.8, 0.78, 0.6], reference="int8_channel")
    )  # fmt: skip
    t = compare_at_rate(df, BASE, 1e-3, perturbations=["fp32_word", "int8_word"])
    assert t.set_index(["layer", "perturbation"]).loc[("fc6", "int8_word"), "relative"] == pytest.approx(0.78 / 0.8)
    bp = bit_positions_table(df, BASE, 1e-3).set_index(["layer", "bits"])["drop"]
    assert bp[("conv1", "all")] == pytest.approx(0.4) and bp[("conv1", "mantissa")] == pytest.approx(0.0)
    f = {x.claim: x for x in findings(df, BASE, rate=1e-3, n_boot=100)}
    # exponent drop (0.38 + 0.7) / whole word (0.4 + 0.7) = 98% >= 90%
    assert f[EXPONENT_CLAIM].verdict == "holds" and "98%" in f[EXPONENT_CLAIM].found
    assert f[INT8_CLAIM].verdict == "holds"
    assert f[LAYER_CLAIM].verdict == "holds" and "most vulnerable fc6 <= 0.0001" in f[LAYER_CLAIM].found
    # without the variants a finding needs: "not tested"
    only = findings(df[df["perturbation"] == "fp32_man"], BASE, rate=1e-3)
    assert {x.verdict for x in only} == {"not tested"}


def test_a_noisy_exponent_share_is_undetermined():
    """The exponent share's interval comes from the repeats: three repeats that scatter widely
    around a share above 90% leave the finding undetermined, with its interval in the table."""
    df = table(
        grid("fp32_word", "fp32", "all", "conv1", 1, [0.8, 0.8, 0.4, 0.1])
        + grid("fp32_word", "fp32", "all", "fc6", 2, [0.8, 0.3, 0.1, 0.1])
        + grid("fp32_exp", "fp32", "exponent", "conv1", 1, [0.8, 0.8, 0.45, 0.1], jitter=0.3)
        + grid("fp32_exp", "fp32", "exponent", "fc6", 2, [0.8, 0.3, 0.1, 0.1])
    )  # fmt: skip
    f = {x.claim: x for x in findings(df, BASE, rate=1e-3, n_boot=500)}[EXPONENT_CLAIM]
    # share (0.35 + 0.7) / (0.4 + 0.7) = 95%; repeats 0.15 / 0.45 / 0.75 put it anywhere in 68% .. 123%
    assert f.estimate == pytest.approx(1.05 / 1.1) and f.lo < 0.9 < f.hi and f.verdict == "undetermined"
    assert f.n == 3 and f.threshold == 0.9 and "bootstrap over repeats" in f.interval
