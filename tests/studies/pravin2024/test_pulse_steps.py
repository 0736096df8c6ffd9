"""`pulse_steps`: a coarser sweep that keeps the paper's pulse band is a subsample of the paper's
sweep (the default config's S = 13 with pulse_steps 25 against S = 25), in both modes; without it
the band follows S (the authors' code), twice as wide at S = 13."""

from __future__ import annotations

import pytest
import torch

from netperturb.core.layers import find_layers
from netperturb.perturb.filters import pulse_half_width
from netperturb.studies.pravin2024.evaluator import AttackSpec, Evaluator
from netperturb.studies.pravin2024.sweeps import layer_sweep, network_sweep

KEYS = ("data", "perturbation", "n_filtered", "n_weights", "top1", "top5", "position")


def _ev(net):
    torch.manual_seed(3)
    x, y = torch.rand(20, 1, 8, 8) * 2 - 1, torch.arange(20) % 10
    return Evaluator(net, x, y, AttackSpec(eps=0.1), box=(-1.0, 1.0), study_seed=5, model_key="m/init0/epoch1", batch_size=10)


def _by_point(rows, every=1):
    return {(r["perturbation"], r["step"] // every, r["data"]): r for r in rows if r["step"] % every == 0}


@pytest.mark.parametrize("mode", ["layer", "network"])
def test_13_points_with_the_25_point_band_are_every_other_point_of_the_25_point_sweep(convbn, mode):
    ev = _ev(convbn)
    layers = find_layers(convbn)
    if mode == "layer":
        fine = layer_sweep(ev, layers[1], ["low", "high", "pulse"], 25, progress=False)
        coarse = layer_sweep(ev, layers[1], ["low", "high", "pulse"], 13, progress=False, pulse_steps=25)
    else:
        fine = network_sweep(ev, layers, ["low", "high", "pulse"], 25, progress=False)
        coarse = network_sweep(ev, layers, ["low", "high", "pulse"], 13, progress=False, pulse_steps=25)
    a, b = _by_point(fine, every=2), _by_point(coarse)
    assert len(b) == 3 * 13 * 2 and a.keys() == b.keys()
    for k in a:
        assert {c: a[k][c] for c in KEYS} == {c: b[k][c] for c in KEYS}, k
        assert a[k]["level"] == pytest.approx(b[k]["level"], rel=1e-12, abs=1e-15)
    # the pulse band does remove weights at some point, so the comparison covers it
    assert any(r["n_filtered"] > 0 for k, r in b.items() if k[0] == "filter_pulse")


def test_without_pulse_steps_the_band_follows_s(convbn):
    ev = _ev(convbn)
    layer = find_layers(convbn)[1]
    own = layer_sweep(ev, layer, ["pulse"], 13, progress=False)
    kept = layer_sweep(ev, layer, ["pulse"], 13, progress=False, pulse_steps=25)
    assert pulse_half_width(-1.0, 1.0, 13) == pytest.approx(2 * pulse_half_width(-1.0, 1.0, 25), rel=0.1)
    n_own = sum(r["n_filtered"] for r in own if r["data"] == "clean")
    n_kept = sum(r["n_filtered"] for r in kept if r["data"] == "clean")
    # a band about twice as wide removes about twice the weights over the sweep
    assert n_own > 1.5 * n_kept > 0
