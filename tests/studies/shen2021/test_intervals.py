"""The three readings of the Min-Max interval (current, init_bound, trajectory) on a hand-made
weight history, against positions and fuzziness computed by hand from the definitions in
netperturb.studies.shen2021.intervals."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from netperturb.core.layers import find_layers
from netperturb.studies.shen2021.figures import fuzziness_change, readings_change
from netperturb.studies.shen2021.findings import FALL_CLAIM, findings
from netperturb.studies.shen2021.intervals import (
    READINGS,
    RunningRange,
    init_bound,
    random_walk_reference,
    reading_position,
)
from netperturb.studies.shen2021.minmax import WeightTracker, weight_histograms, weight_stats

LN2 = math.log(2)


def h(mu: float) -> float:
    """De Luca-Termini term of one weight, 0 ln 0 = 0."""
    return -sum(p * math.log(p) for p in (mu, 1 - mu) if p > 0)


# One Linear(4 -> 1) layer (fan_in 4, so the initialisation bound is 1/sqrt(4) = 0.5) whose
# weights take these values at initialisation and after optimiser steps 1 and 2 (dyadic
# fractions, exact in float32).
HISTORY = [
    [0.125, -0.25, 0.25, 0.0],
    [0.375, -0.375, 0.125, 0.0],
    [0.25, -0.625, 0.75, 0.0],
]


def _tracked_history(readings=READINGS):
    net = nn.Sequential(nn.Linear(4, 1, bias=False))
    layers = find_layers(net)
    tracker = WeightTracker(layers, steps_per_epoch=4, steps=(1, 2), bins=2, meta={"model": "m"}, readings=readings)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([HISTORY[0]]))
    tracker.on_epoch_end(0, net, {})
    for step, w in enumerate(HISTORY[1:], start=1):
        with torch.no_grad():
            net[0].weight.copy_(torch.tensor([w]))
        tracker.on_step(1, step, net)
    return tracker


def _row(st, step, interval):
    r = st[(st["step"] == step) & (st["interval"] == interval) & (st["scope"] == "layer")]
    assert len(r) == 1
    return r.iloc[0]


def test_init_bound_is_pytorchs_kaiming_uniform_bound():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 64, 5)  # fan_in 16 * 5 * 5 = 400
    assert init_bound(conv.weight) == pytest.approx(1 / 20)
    assert conv.weight.abs().max().item() <= 1 / 20 and conv.weight.abs().max().item() > 0.99 / 20
    assert init_bound(nn.Conv2d(8, 4, 3, groups=2).weight) == pytest.approx(1 / math.sqrt(4 * 9))
    assert init_bound(nn.Linear(9, 2).weight) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="fan_in"):
        init_bound(torch.zeros(5))


def test_three_readings_on_a_hand_made_history():
    st = _tracked_history().stats()
    assert sorted(st["step"].unique()) == [0, 1, 2] and set(st["interval"]) == set(READINGS)
    # after step 2, w = [0.25, -0.625, 0.75, 0.0]
    # current: [min, max] = [-0.625, 0.75], mu = [0.875, 0, 1.375, 0.625] / 1.375 = [7/11, 0, 1, 5/11]
    cur = _row(st, 2, "current")
    mu = [7 / 11, 0.0, 1.0, 5 / 11]
    assert cur["fuzziness"] == pytest.approx(sum(map(h, mu)) / 4)
    assert cur["mu_mean"] == pytest.approx(sum(mu) / 4)
    assert (cur["frac_low"], cur["frac_high"], cur["frac_outside"]) == (0.25, 0.25, 0.0)
    # init_bound: [-0.5, 0.5]; -0.625 and 0.75 left it: no position (counted in frac_outside, not as
    # at an end); the two inside sit at mu = w + 0.5 = [0.75, 0.5]
    ib = _row(st, 2, "init_bound")
    assert ib["fuzziness"] == pytest.approx((h(0.75) + LN2) / 2)
    assert ib["mu_mean"] == pytest.approx((0.75 + 0.5) / 2)
    assert (ib["frac_low"], ib["frac_high"], ib["frac_ends"], ib["frac_outside"]) == (0.0, 0.0, 0.0, 0.5)
    # trajectory: ranges [0.125, 0.375], [-0.625, -0.25], [0.125, 0.75], never moved -> mu = [0.5, 0, 1, NaN]
    tr = _row(st, 2, "trajectory")
    assert tr["fuzziness"] == pytest.approx(LN2 / 3) and tr["mu_mean"] == pytest.approx(0.5)
    assert (tr["frac_low"], tr["frac_high"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    # after step 1 every weight that moved is at an end of its own range: [1, 0, 0, NaN]
    tr1 = _row(st, 1, "trajectory")
    assert tr1["fuzziness"] == 0 and tr1["frac_ends"] == 1 and tr1["mu_mean"] == pytest.approx(1 / 3)
    # at initialisation no weight has a range yet: undefined, not 0
    tr0 = _row(st, 0, "trajectory")
    assert np.isnan(tr0["fuzziness"]) and np.isnan(tr0["frac_ends"])
    # the weight statistics themselves do not depend on the reading
    assert st[st["step"] == 2].groupby("interval")["w_max"].first().tolist() == [0.75] * 3


def test_running_range_and_histograms_follow_the_history():
    tracker = _tracked_history()
    assert torch.equal(tracker.ranges.lo["0"], torch.tensor([[0.125, -0.625, 0.125, 0.0]]))
    assert torch.equal(tracker.ranges.hi["0"], torch.tensor([[0.375, -0.25, 0.75, 0.0]]))
    hist = tracker.histograms()
    at2 = hist[(hist["step"] == 2) & (hist["scope"] == "layer")].set_index(["interval", "bin"])["count"]
    assert at2.loc["current"].tolist() == [2, 2]  # mu 0, 5/11 | 7/11, 1
    assert at2.loc["init_bound"].tolist() == [0, 2]  # | 0.5, 0.75 (the two beyond the bound left out)
    assert at2.loc["trajectory"].tolist() == [1, 2]  # 0 | 0.5, 1 (the NaN left out)


def test_reading_position_errors_and_current_only_by_default():
    w = torch.tensor([[0.0, 1.0]])
    with pytest.raises(ValueError, match="reading"):
        reading_position(w, "range")
    with pytest.raises(ValueError, match="bound"):
        reading_position(w, "init_bound")
    with pytest.raises(ValueError, match="run_min"):
        reading_position(w, "trajectory")
    net = nn.Sequential(nn.Linear(2, 1))
    assert set(weight_stats(net, find_layers(net))["interval"]) == {"current"}
    with pytest.raises(ValueError, match="RunningRange"):
        weight_stats(net, find_layers(net), readings=("trajectory",))
    assert set(weight_histograms(net, find_layers(net), readings=("init_bound",))["interval"]) == {"init_bound"}
    rr = RunningRange(net, find_layers(net))
    assert rr.bound["0"] == pytest.approx(1 / math.sqrt(2))


def test_random_walk_reference():
    # one step: the last point is always one end of the range {0, x_1}
    assert random_walk_reference(1) == (0.0, 1.0)
    f, ends = random_walk_reference(500, end_fraction=0.1)
    assert random_walk_reference(500, end_fraction=0.1) == (f, ends)  # fixed seed
    assert 0 < f < 0.5 and 0.2 < ends < 1  # nearer the ends than uniform positions (F 1/2, 20% near an end)
    with pytest.raises(ValueError):
        random_walk_reference(0)


def _tracking(interval: str, f0: float, fend: float, seeds=(0, 1, 2), step_end: int = 30) -> pd.DataFrame:
    rows = []
    for s in seeds:
        for epoch, step, f in ((0, 0, f0), (3, step_end, fend)):
            for label, idx in (("conv1", 1), ("fc2", 2)):
                rows.append({"lam": 0.0, "train_seed": s, "layer": label, "layer_label": label, "layer_index": idx,
                             "epoch": epoch, "step": step, "interval": interval, "scope": "layer",
                             "fuzziness": f + 0.01 * s if f == f else f, "frac_ends": 0.2, "frac_low": 0.1,
                             "frac_high": 0.1})  # fmt: skip
    return pd.DataFrame(rows)


def test_change_per_reading():
    f_rw, ends_rw = random_walk_reference(30, end_fraction=0.1)
    track = pd.concat([
        _tracking("current", 0.50, 0.60),  # rises: the paper's claim does not hold
        _tracking("init_bound", 0.50, 0.30),  # falls
        _tracking("trajectory", np.nan, f_rw - 0.1),  # below the random walk
    ])  # fmt: skip
    ch = readings_change(track, "layer", end_fraction=0.1)
    assert ch["interval"].drop_duplicates().tolist() == ["current", "init_bound", "trajectory"]
    assert set(ch["control"]) == {"none"}  # a table without controls: the trained runs only
    cur = ch[(ch["interval"] == "current") & (ch["layer_label"] == "conv1")].iloc[0]
    assert (cur["F0_mean"], cur["Fend_mean"], cur["n_fell"], cur["n_seeds"]) == (pytest.approx(0.51), pytest.approx(0.61), 0, 3)
    tr = ch[(ch["interval"] == "trajectory") & (ch["layer_label"] == "conv1")].iloc[0]
    assert tr["F0_mean"] == pytest.approx(f_rw) and tr["ends0_mean"] == pytest.approx(ends_rw)
    assert tr["reference"] == "random walk of 30 steps" and tr["n_fell"] == 3
    assert fuzziness_change(track, "layer", "init_bound")["n_fell"].tolist() == [3, 3]
    # without controls the fall findings compare each run with its own start only, and say so
    from netperturb.studies.shen2021.controls import control_margins

    margins = pd.concat([control_margins(track, r) for r in ("current", "init_bound", "trajectory")])
    falls = [f for f in findings(margins, pd.DataFrame(), readings=READINGS) if f.claim.startswith(FALL_CLAIM)]
    assert [f.verdict for f in falls] == ["does not hold", "holds", "not tested"]  # trajectory: nothing to compare
    assert "current [min, max]" in falls[0].claim and "1/sqrt(fan_in)" in falls[1].claim and "own range" in falls[2].claim
    assert "conv1: F 0.510 -> 0.610" in falls[0].found and "not run" in falls[0].control
    # init_bound says how many weights ended beyond the bound, when the tracking records it
    track["frac_outside"] = np.where(track["interval"] == "init_bound", 0.25, 0.0)
    assert readings_change(track)["outsideend_mean"].tolist() == [0, 0, 0.25, 0.25, 0, 0]
