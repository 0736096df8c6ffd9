"""Synaptic filters: exact zero sets, sweep grids, whole-network mode writes every layer."""

import copy

import pytest
import torch

from netperturb.studies.pravin2024.evaluator import AttackSpec, Evaluator
from netperturb.studies.pravin2024.sweeps import network_overrides, network_sweep
from netperturb.perturb.filters import FILTERS, HighPassFilter, LowPassFilter, PulseFilter, alpha_grid, make_filter, pulse_half_width, weight_range
from netperturb.core.layers import find_layers
from netperturb.perturb.registry import PERTURBATIONS, make_perturbation

# dyadic values: exact in float32 and float64, so the boundaries are unambiguous
W = torch.tensor([[-0.5, -0.25, 0.0, 0.125], [0.25, 0.375, 0.5, -0.125]])


@pytest.mark.parametrize(
    "flt, alpha, expected",
    [
        (LowPassFilter(), -0.25, [-0.5, -0.25]),  # w <= alpha, boundary included
        (LowPassFilter(), 0.125, [-0.5, -0.25, -0.125, 0.0, 0.125]),
        (HighPassFilter(), 0.375, [0.375, 0.5]),  # w >= alpha, boundary included
        (HighPassFilter(), -0.125, [-0.125, 0.0, 0.125, 0.25, 0.375, 0.5]),
        (PulseFilter(0.125), 0.25, [0.125, 0.25]),  # [0.125, 0.375): 0.375 excluded
        (PulseFilter(0.125), -0.375, [-0.5]),  # [-0.5, -0.25): -0.25 excluded
    ],
)
def test_each_filter_zeroes_exactly_the_weights_its_definition_names(flt, alpha, expected):
    before = W.clone()
    new = flt({"weight": W}, alpha)
    assert torch.equal(W, before)  # the input is never modified
    w = new["weight"]
    assert w.shape == W.shape and w.dtype == W.dtype
    mask = flt.mask(W, alpha)
    assert sorted(W[mask].tolist()) == sorted(expected)
    assert (w[mask] == 0).all()
    assert torch.equal(w[~mask], W[~mask])  # everything else untouched, bit for bit


def test_pulse_band_is_half_open_and_mask_counts():
    f = PulseFilter(0.125)
    m = f.mask(W, -0.375)  # band [-0.5, -0.25): -0.5 in, -0.25 out
    assert W[m].tolist() == [-0.5]
    m = f.mask(W, 0.375)  # [0.25, 0.5): 0.25, 0.375 in, 0.5 out
    assert sorted(W[m].tolist()) == [0.25, 0.375]
    assert PulseFilter(0.0).mask(W, 0.25).sum() == 0  # zero width: nothing


def test_nothing_zeroed_returns_empty_and_no_generator_is_used():
    assert LowPassFilter()({"weight": W}, -1.0) == {}
    assert HighPassFilter()({"weight": W}, 0.75) == {}
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    a = PulseFilter(0.1)({"weight": W}, 0.25, g)
    assert torch.equal(g.get_state(), state)
    assert torch.equal(a["weight"], PulseFilter(0.1)({"weight": W}, 0.25)["weight"])
    assert not LowPassFilter.stochastic


def test_registry_levels_and_options():
    assert {"filter_low", "filter_high", "filter_pulse"} <= set(PERTURBATIONS)
    assert set(FILTERS) == {"low", "high", "pulse"}
    f = make_perturbation("filter_pulse", half_width=0.25)
    assert f.half_width == 0.25
    assert f.check_level(-3.5) == -3.5  # signed thresholds are valid levels
    with pytest.raises(ValueError, match="finite"):
        f.check_level(float("inf"))
    with pytest.raises(ValueError, match="half_width"):
        PulseFilter(-1)
    with pytest.raises(ValueError, match="pulse filter needs"):
        make_filter("pulse")


def test_alpha_grid_endpoints_order_and_positions():
    lo, hi = weight_range(W)
    assert (lo, hi) == (-0.5, 0.5)
    a, t = alpha_grid("low", lo, hi, 5)
    assert a.tolist() == [-0.5, -0.25, 0.0, 0.25, 0.5] and t.tolist() == [0, 0.25, 0.5, 0.75, 1]
    a, _ = alpha_grid("high", lo, hi, 5)
    assert a.tolist() == [0.5, 0.25, 0.0, -0.25, -0.5]  # sweep order: max -> min
    # float32 ends are hit exactly (numpy.linspace sets the end point)
    w = torch.randn(50, generator=torch.Generator().manual_seed(0))
    lo, hi = weight_range(w)
    a, _ = alpha_grid("low", lo, hi, 25)
    assert a[0] == float(w.min()) and a[-1] == float(w.max())
    assert int(LowPassFilter().mask(w, a[0]).sum()) == 1  # only the minimum
    assert int(LowPassFilter().mask(w, a[-1]).sum()) == 50  # all
    b, _ = alpha_grid("high", lo, hi, 25)
    assert int(HighPassFilter().mask(w, b[0]).sum()) == 1 and int(HighPassFilter().mask(w, b[-1]).sum()) == 50
    assert pulse_half_width(lo, hi, 25) == pytest.approx((hi - lo) / 50)
    with pytest.raises(ValueError):
        alpha_grid("band", 0, 1, 5)
    with pytest.raises(ValueError):
        alpha_grid("low", 1, 0, 5)


def test_whole_network_mode_writes_every_layer(convbn):
    layers = find_layers(convbn)
    named = dict(convbn.named_parameters())
    weights = [named[f"{l.path}.weight"] for l in layers]
    lo, hi = weight_range(weights)
    alpha = 0.0
    over = network_overrides(convbn, layers, "low", alpha, lo=lo, hi=hi, steps=9)
    assert set(over) == {f"{l.path}.weight" for l in layers}  # all four layers, not only the last
    for l, w in zip(layers, weights):
        assert torch.equal(over[f"{l.path}.weight"], torch.where(w <= 0, torch.zeros(()), w))
    # the naive reference: a copy with every layer's weights replaced in place
    ref = copy.deepcopy(convbn)
    with torch.no_grad():
        for l in layers:
            w = ref.get_submodule(l.path).weight
            w[w <= 0] = 0
    x = torch.rand(24, 1, 8, 8)
    y = torch.arange(24) % 10
    with torch.no_grad():
        assert torch.equal(ref(x), torch.func.functional_call(convbn, over, (x,)))
    # the sweep: grid [-1, 1] in 9 steps has alpha = 0 as its 5th point
    ev = Evaluator(convbn, x, y, AttackSpec(eps=0.05), study_seed=1, model_key="m")
    rows = network_sweep(ev, layers, ["low", "pulse"], 9, grid=(-1.0, 1.0), progress=False)
    assert len(rows) == 2 * 9 * 2  # filters x steps x (clean, adversarial)
    assert all(r["mode"] == "network" and r["layer"] == "all" for r in rows)
    at0 = {r["data"]: r for r in rows if r["perturbation"] == "filter_low" and r["step"] == 4}
    assert at0["clean"]["level"] == 0.0 and at0["clean"]["position"] == 0.5
    assert at0["clean"]["n_filtered"] == sum(int((w <= 0).sum()) for w in weights)
    with torch.no_grad():
        ref_acc = (ref(x).argmax(1) == y).double().mean().item()
    assert at0["clean"]["top1"] == pytest.approx(ref_acc)
