"""Per-image credits of the sweeps and the bootstrap intervals of the filtering scores over the
evaluation images (netperturb.studies.pravin2024.images / .intervals): exact encoding, the
interval of a planted effect gives its class, a score at the tolerance edge is undetermined,
the replicates reproduce the scalar scores, and the width shrinks as 1 / sqrt(images)."""

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import torch

from netperturb.core.evaluate import count_logits
from netperturb.studies.pravin2024.images import (
    ImageCounts,
    counts_from_stored,
    counts_json,
    decode_credits,
    encode_credits,
    encode_fractions,
    image_counts,
)
from netperturb.studies.pravin2024.intervals import classify_interval, images_needed, pooled_scores, score_replicates
from netperturb.studies.pravin2024.scores import _curve_scores, filtering_scores


def test_image_counts_keep_every_images_credit_exactly_with_ties():
    logits = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 3.0, 1.0], [5.0, 5.0, 0.0]])
    labels = torch.tensor([0, 2, 0, 1])
    c = image_counts(logits[:2], labels[:2])
    c += image_counts(logits[2:], labels[2:])
    ref = count_logits(logits, labels)
    assert c.base() == ref  # the sums are those of count_logits
    v = c.credits("top1")
    assert v.tolist() == [1.0, 1 / 3, 0.0, 0.5]  # image 1: a three-way tie, image 3: a two-way tie
    assert Fraction(ref.top1) == Fraction(1) + Fraction(1, 3) + Fraction(1, 2)
    text = encode_credits(c, "top1")
    assert text == "80|1:1/3,3:1/2" and np.array_equal(decode_credits(text, 4), v)
    assert c.credits("top5").tolist() == [1.0] * 4  # k = min(5, 3)
    back = counts_from_stored(counts_json(c))
    assert isinstance(back, ImageCounts) and back == c
    with pytest.raises(ValueError, match="rerun the pravin2024 sweep"):
        decode_credits("", 4)


def _sweep_table(clean: np.ndarray, adv: np.ndarray, remaining: np.ndarray, *, layer="conv1", init=0):
    """A per-layer sweep of S points x N images from per-image 0/1 credits (S, N)."""
    s, n = clean.shape
    t = np.linspace(0, 1, s)
    rows = []
    for data, m in (("clean", clean), ("adversarial", adv)):
        for i in range(s):
            rows.append({"study": "s", "dataset": "d", "model": "m", "arch": "a", "init": init, "epoch": 1, "mode": "layer",
                         "layer": layer, "layer_label": layer, "layer_index": 1, "perturbation": "filter_low",
                         "position": t[i], "step": i, "data": data, "n_images": n, "top1": m[i].mean(),
                         "top1_images": encode_fractions(m[i].astype(int), np.ones(n, int)),
                         "n_filtered": round((1 - remaining[i]) * 1000), "n_weights": 1000})  # fmt: skip
    base = pd.DataFrame([{"model": "m", "init": init, "epoch": 1, "data": d, "top1": m[0].mean()}
                         for d, m in (("clean", clean), ("adversarial", adv))])  # fmt: skip
    return pd.DataFrame(rows), base


def _curves(n: int, p_clean, p_adv, seed=0, s=9):
    """Per-image credits whose accuracy follows p(t) (fixed draws)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, s)
    u = rng.random(n)  # one latent difficulty per image, shared by the points (paired images)
    clean = (u[None, :] < np.asarray([p_clean(x) for x in t])[:, None]).astype(float)
    adv = (u[None, :] < np.asarray([p_adv(x) for x in t])[:, None]).astype(float)
    return clean, adv, 1 - t


def test_replicates_reproduce_the_scalar_scores():
    clean, adv, rem = _curves(50, lambda t: 0.9 - 0.5 * t, lambda t: 0.5 - 0.3 * t)
    t = np.linspace(0, 1, clean.shape[0])
    ref = _curve_scores(t, clean.mean(1), adv.mean(1), rem, np.nan, np.nan, "first_point", "density")
    got = score_replicates(t, clean.mean(1)[None], adv.mean(1)[None], rem, np.array([np.nan]), np.array([np.nan]),
                           "first_point", "density")  # fmt: skip
    for k in ref:
        assert got[k][0] == pytest.approx(ref[k], abs=1e-12)
    sw, base = _sweep_table(clean, adv, rem)
    s = filtering_scores(sw, base, tolerance=0.05, n_boot=500, seed=3).set_index("score")
    for k in ref:
        assert s.loc[k, "value"] == pytest.approx(ref[k], abs=1e-12)
        assert s.loc[k, "lo"] <= s.loc[k, "value"] <= s.loc[k, "hi"]
    assert (s["n_images"] == 50).all() and "evaluation images (500 resamples)" in s["interval"].iloc[0]
    again = filtering_scores(sw, base, tolerance=0.05, n_boot=500, seed=3).set_index("score")
    assert again["lo"].equals(s["lo"])  # same seed, same interval


def test_a_planted_antifragile_layer_is_classed_and_a_borderline_one_is_undetermined():
    # clean accuracy stays at its first point while the weights go: c - dens_bar = t, integral 1/2
    clean, adv, rem = _curves(400, lambda t: 0.9, lambda t: 0.6)
    sw, base = _sweep_table(clean, adv, rem)
    s = filtering_scores(sw, base, tolerance=0.05, n_boot=1000).set_index("score")
    assert s.loc["clean", "value"] == pytest.approx(0.5, abs=1e-12)
    assert s.loc["clean", "class"] == "antifragile" and s.loc["clean", "class_point"] == "antifragile"
    # clean falls just as fast as the weights go, but the images scatter it: near 0 -> robust or undetermined
    clean, adv, rem = _curves(30, lambda t: 0.9 * (1 - t) + 0.06 * t, lambda t: 0.5 * (1 - t), seed=1)
    sw, base = _sweep_table(clean, adv, rem)
    s = filtering_scores(sw, base, tolerance=0.05, n_boot=1000).set_index("score")
    lo, hi = s.loc["clean", "lo"], s.loc["clean", "hi"]
    assert lo < -0.05 or hi > 0.05  # 30 images: the interval reaches past the robust band
    assert s.loc["clean", "class"] == "undetermined"


def test_interval_classes():
    assert classify_interval(-0.2, -0.06, 0.05) == "fragile"
    assert classify_interval(0.06, 0.3, 0.05) == "antifragile"
    assert classify_interval(-0.05, 0.05, 0.05) == "robust"
    assert classify_interval(-0.07, 0.01, 0.05) == "undetermined"
    assert classify_interval(float("nan"), 0.01, 0.05) == "undefined"


def test_width_shrinks_with_the_images_and_the_planning_figure():
    widths = {}
    for n in (100, 1600):
        clean, adv, rem = _curves(n, lambda t: 0.9 - 0.4 * t, lambda t: 0.6 - 0.4 * t, seed=5)
        sw, base = _sweep_table(clean, adv, rem)
        s = filtering_scores(sw, base, tolerance=0.05, n_boot=1000).set_index("score")
        widths[n] = s.loc["adversarial", "hi"] - s.loc["adversarial", "lo"]
    assert widths[1600] / widths[100] == pytest.approx(0.25, rel=0.3)  # 1 / sqrt(16)
    assert images_needed(-0.1, 0.1, 100, 0.05) == pytest.approx(400)


def test_pooled_over_one_initialisation_is_the_image_interval():
    clean, adv, rem = _curves(80, lambda t: 0.9 - 0.3 * t, lambda t: 0.5 - 0.2 * t)
    sw, base = _sweep_table(clean, adv, rem)
    s, reps = filtering_scores(sw, base, tolerance=0.05, n_boot=400, return_replicates=True)
    p = pooled_scores(s, reps, tolerance=0.05).set_index("score")
    s = s.set_index("score")
    for k in ("clean", "adversarial", "difference"):
        assert p.loc[k, "value"] == s.loc[k, "value"] and p.loc[k, "n_inits"] == 1
        assert p.loc[k, "lo"] == pytest.approx(s.loc[k, "lo"]) and p.loc[k, "hi"] == pytest.approx(s.loc[k, "hi"])
    # two initialisations: the mean of both values; the interval covers the spread between them
    c2, a2, _ = _curves(80, lambda t: 0.9 - 0.6 * t, lambda t: 0.5 - 0.4 * t, seed=2)
    sw2, base2 = _sweep_table(c2, a2, rem, init=1)
    both, reps = filtering_scores(pd.concat([sw, sw2]), pd.concat([base, base2]), tolerance=0.05, n_boot=400,
                                  return_replicates=True)  # fmt: skip
    p2 = pooled_scores(both, reps, tolerance=0.05).set_index("score")
    v = both.groupby("score")["value"].mean()
    assert p2.loc["clean", "value"] == pytest.approx(v["clean"]) and p2.loc["clean", "n_inits"] == 2
    assert p2.loc["clean", "lo"] <= both["value"][both["score"] == "clean"].min() + 1e-9


def test_images_table_measures_the_half_widths_and_the_images_needed():
    from netperturb.studies.pravin2024.intervals import images_table

    sc = pd.DataFrame({"mode": "layer", "score": "clean", "n_images": 100, "lo": [-0.1, 0.0, -0.2, 0.1],
                       "hi": [0.1, 0.1, 0.2, 0.2], "class": ["undetermined", "robust", "undetermined", "antifragile"]})
    t = images_table(sc, 0.05).iloc[0]
    # half-widths 0.1, 0.05, 0.2, 0.05: median 0.075 -> 100 * (0.075 / 0.05)^2 = 225 images
    assert t["n_curves"] == 4 and t["undetermined"] == 0.5
    assert t["half_width_q50"] == pytest.approx(0.075) and t["images_needed_q50"] == pytest.approx(225)
