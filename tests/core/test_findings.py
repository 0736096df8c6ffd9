"""The findings model (netperturb.core.findings) on cases whose answer is known: a planted effect
holds, a null does not hold or is undetermined, a straddling interval is undetermined, the
percentile bootstrap covers a known mean at its nominal rate, the power helper's n clears the
threshold and n - 1 does not."""

import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from netperturb.core.findings import (
    FINDING_COLUMNS,
    Finding,
    assess,
    bootstrap,
    bootstrap_mean,
    decide,
    findings_frame,
    findings_markdown,
    repeats_needed,
    resample_counts,
    resample_indices,
    t_interval,
)


def test_decide_from_the_interval_not_the_estimate():
    assert decide(0.1, 0.25, 0.3, "<") == "holds"
    assert decide(0.3, 0.5, 0.3, "<") == "does not hold"  # touching from above is not below
    assert decide(0.2, 0.4, 0.3, "<") == "undetermined"  # straddles
    assert decide(0.31, 0.5, 0.3, ">") == "holds"
    assert decide(0.1, 0.3, 0.3, ">") == "does not hold"
    assert decide(0.2, 0.4, 0.3, ">") == "undetermined"
    assert decide(math.nan, 0.4, 0.3, ">") == "not tested"
    with pytest.raises(ValueError, match="direction"):
        decide(0, 1, 0.5, ">=")
    with pytest.raises(ValueError, match="lower bound"):
        decide(1, 0, 0.5, "<")


def _finding(values, threshold, direction, seed=0):
    est, lo, hi = (float(x) for x in bootstrap_mean(np.asarray(values), seed=seed))
    return assess("claim", "found", "t.csv", quantity="q", estimate=est, lo=lo, hi=hi, interval="boot", n=len(values),
                  threshold=threshold, direction=direction)  # fmt: skip


def test_planted_effect_holds_and_a_null_never_does():
    rng = np.random.default_rng(1)
    planted = [_finding(rng.normal(0.5, 0.05, 20), 0.3, ">", seed=s) for s in range(20)]
    assert {f.verdict for f in planted} == {"holds"}
    # no effect (true mean on the threshold): "undetermined" about 95% of the time; "holds" only at the
    # one-sided error rate of a 95% interval (about 2.5%)
    nulls = [_finding(rng.normal(0.3, 0.1, 20), 0.3, ">", seed=s).verdict for s in range(200)]
    assert nulls.count("undetermined") / 200 >= 0.88 and nulls.count("holds") / 200 <= 0.05
    # an effect in the wrong direction: does not hold
    assert {_finding(rng.normal(0.1, 0.05, 20), 0.3, ">", seed=s).verdict for s in range(20)} == {"does not hold"}
    # a straddling interval
    f = assess("c", "f", "s", quantity="q", estimate=0.3, lo=0.2, hi=0.4, interval="i", n=5, threshold=0.3, direction="<")
    assert f.verdict == "undetermined" and f.summary == "0.300 [0.200, 0.400], n = 5; claim: < 0.3"


def test_percentile_bootstrap_covers_a_known_mean_at_about_its_nominal_rate():
    rng = np.random.default_rng(7)
    mu = 1.0
    data = rng.normal(mu, 2.0, size=(400, 30))
    est, lo, hi = bootstrap_mean(data, n_boot=2000, seed=3)  # 400 datasets at once
    cover = np.mean((lo <= mu) & (mu <= hi))
    assert est.shape == lo.shape == (400,) and np.allclose(est, data.mean(1))
    assert 0.90 <= cover <= 0.98  # the percentile interval of a mean of 30 normals: about 0.94


def test_t_interval_coverage_and_definition():
    rng = np.random.default_rng(11)
    data = rng.normal(0.0, 1.0, size=(2000, 3))
    hits = [lo <= 0 <= hi for lo, hi in (t_interval(row)[1:] for row in data)]
    assert 0.93 <= np.mean(hits) <= 0.97
    m, lo, hi = t_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and hi - m == pytest.approx(student_t.ppf(0.975, 2) * 1.0 / math.sqrt(3))
    assert math.isnan(t_interval([1.0])[1])


def test_bootstrap_is_seeded_paired_and_matches_the_mean_shortcut():
    x = np.random.default_rng(0).normal(size=(3, 7))
    e1, lo1, hi1 = bootstrap_mean(x, seed=5)
    e2, lo2, hi2, reps = bootstrap(x, lambda v: v.mean(-1), seed=5)
    assert np.allclose(e1, e2) and np.allclose(lo1, lo2) and np.allclose(hi1, hi2) and reps.shape == (2000, 3)
    assert np.array_equal(bootstrap_mean(x, seed=5)[1], lo1)  # same seed, same interval
    # paired arrays get the same resamples: the difference of identical data is 0 in every resample
    _, lo, hi, reps = bootstrap([x, x], lambda a, b: (a - b).mean(-1))
    assert np.all(reps == 0) and np.all(lo == 0) and np.all(hi == 0)
    # units on another axis
    e3, lo3, _, _ = bootstrap(x.T.copy(), lambda v: v.mean(-2), seed=5, axis=-2)
    assert np.allclose(e3, e1) and np.allclose(lo3, lo1)
    counts = resample_counts(7, 50, seed=2)
    assert counts.shape == (50, 7) and (counts.sum(1) == 7).all()
    assert np.array_equal(np.sort(resample_indices(7, 50, seed=2), axis=1)[0], np.repeat(np.arange(7), counts[0]))
    one = bootstrap_mean(np.array([[0.4]]))
    assert one[1][0] == one[2][0] == 0.4  # a single unit: a point interval
    with pytest.raises(ValueError, match="negative"):
        bootstrap(x, lambda v: v.mean(0), axis=0)


def test_repeats_needed_is_the_smallest_n_whose_interval_clears_the_threshold():
    values = [0.10, 0.50, 0.30, 0.20, 0.60]
    m, s = np.mean(values), np.std(values, ddof=1)
    n = int(repeats_needed(values, 0.27))
    half = lambda k: student_t.ppf(0.975, k - 1) * s / math.sqrt(k)  # noqa: E731
    assert half(n) < abs(m - 0.27) <= half(n - 1)
    assert repeats_needed([0.5, 0.5], 0.3) == 1.0  # no spread: one repeat decides
    assert math.isinf(repeats_needed([0.2, 0.4], 0.3))  # the mean sits on the threshold
    assert math.isnan(repeats_needed([0.2], 0.3))


def test_finding_table_and_markdown_show_the_interval():
    f = [assess("A claim", "We found 3.", "s/t.csv", quantity="drop", estimate=0.2, lo=0.1, hi=0.25, interval="95% boot",
                n=10, threshold=0.3, direction="<"),
         Finding("B", "n/a", "not tested", "s/u.csv")]  # fmt: skip
    df = findings_frame(f)
    assert list(df.columns) == FINDING_COLUMNS and df.loc[0, "verdict"] == "holds" and df.loc[0, "n"] == 10
    md = findings_markdown(f)
    assert "**drop: 0.200 [0.100, 0.250], n = 10; claim: < 0.3** <small>(95% boot)</small>" in md
    with pytest.raises(ValueError, match="verdict"):
        Finding("c", "f", "mixed", "s")
