"""Perturbation semantics, line by line of the Design page of the docs ("Perturbation semantics")."""

import math

import pytest
import torch

from netperturb.perturb.noise import GaussianNoise
from netperturb.perturb.knockouts import NodeKnockout, SynapseKnockout
from netperturb.perturb.registry import make_perturbation
from netperturb.perturb.base import n_chosen
from netperturb.core.seeds import cell_generator


def nonzero_params(shape=(16, 8, 3, 3), n_bias=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    # |x| + 0.1 keeps every entry away from 0 so "became zero" is unambiguous
    w = torch.randn(shape, generator=g).abs() + 0.1
    b = torch.randn(n_bias, generator=g).abs() + 0.1
    return {"weight": w, "bias": b}


@pytest.mark.parametrize("level", [0.0, 0.1, 0.25, 0.29, 0.5, 0.7, 0.99, 1.0])
def test_synapse_knockout_zeroes_exactly_floor_pn(level):
    p = nonzero_params()
    out = SynapseKnockout()(p, level, cell_generator(1))
    n, nb = p["weight"].numel(), p["bias"].numel()
    if level == 0:
        assert out == {}
        return
    assert int((out["weight"] == 0).sum()) == math.floor(round(level * n, 9))
    assert int((out["bias"] == 0).sum()) == math.floor(round(level * nb, 9))
    # every entry not zeroed is bit-for-bit the original
    kept = out["weight"] != 0
    assert torch.equal(out["weight"][kept], p["weight"][kept])


def test_n_chosen_is_exact_for_decimal_levels():
    assert n_chosen(0.29, 100) == 29  # 0.29 * 100 == 28.999999999999996 in binary
    assert n_chosen(0.7, 10) == 7
    assert n_chosen(0.35, 10) == 3
    assert n_chosen(1.0, 7) == 7


def test_synapse_knockout_bias_switch_and_separate_draw():
    p = nonzero_params(shape=(64, 64), n_bias=64)
    out = SynapseKnockout(include_bias=False)(p, 0.5, cell_generator(3))
    assert "bias" not in out
    out2 = SynapseKnockout(include_bias=True)(p, 0.5, cell_generator(3))
    # the weight draw comes first, so it is the same with and without the bias draw
    assert torch.equal(out["weight"], out2["weight"])
    assert int((out2["bias"] == 0).sum()) == 32


def test_perturbations_do_not_mutate_inputs():
    p = nonzero_params()
    before = {k: v.clone() for k, v in p.items()}
    for pert in (SynapseKnockout(), NodeKnockout(), GaussianNoise()):
        pert(p, 0.5, cell_generator(0))
    for k in p:
        assert torch.equal(p[k], before[k])


@pytest.mark.parametrize("shape", [(12, 5, 3, 3), (12, 30)])
@pytest.mark.parametrize("level", [0.25, 0.5, 1.0])
def test_node_knockout_zeroes_whole_units_and_nothing_else(shape, level):
    p = nonzero_params(shape=shape, n_bias=12)
    p["bn_weight"] = torch.rand(12) + 0.5
    p["bn_bias"] = torch.rand(12) + 0.5
    out = NodeKnockout()(p, level, cell_generator(7))
    dead = (out["weight"].reshape(12, -1) == 0).all(1)
    assert int(dead.sum()) == math.floor(level * 12)
    # units not chosen are untouched; chosen ones are zero in every role
    for role in ("weight", "bias", "bn_weight", "bn_bias"):
        assert torch.equal(out[role][~dead], p[role][~dead])
        assert (out[role][dead] == 0).all()
    # no partially zeroed unit
    assert not ((out["weight"].reshape(12, -1) == 0).any(1) & ~dead).any()


def test_node_knockout_bn_switch():
    p = nonzero_params(shape=(8, 4), n_bias=8)
    p["bn_weight"], p["bn_bias"] = torch.ones(8), torch.ones(8)
    out = NodeKnockout(bn_aware=False)(p, 0.5, cell_generator(0))
    assert "bn_weight" not in out and "bn_bias" not in out


def test_node_knockout_output_is_zero_after_batchnorm(convbn):
    """With BN-aware knockout a removed filter outputs exactly 0 after its BatchNorm."""
    from torch.func import functional_call

    from netperturb.perturb.grid import layer_params
    from netperturb.core.layers import find_layers

    layer = find_layers(convbn)[1]  # conv without bias, followed by BN
    assert layer.bn == "features.4"
    new = NodeKnockout()(layer_params(convbn, layer), 0.5, cell_generator(5))
    names = layer.param_names()
    overrides = {names[r]: t for r, t in new.items()}
    dead = (new["weight"].reshape(new["weight"].shape[0], -1) == 0).all(1)
    captured = {}
    h = convbn.features[4].register_forward_hook(lambda m, i, o: captured.setdefault("bn", o))
    functional_call(convbn, overrides, (torch.randn(3, 1, 8, 8),))
    h.remove()
    assert dead.sum() == 4
    assert (captured["bn"][:, dead] == 0).all()
    assert (captured["bn"][:, ~dead] != 0).any()


def test_gaussian_noise_std_matches_sigma_times_weight_std():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(512, 1024, generator=g) * 0.05 + 0.01
    b = torch.randn(4096, generator=g) * 0.3
    for s in (0.5, 2.0):
        out = GaussianNoise()({"weight": w, "bias": b}, s, cell_generator(11))
        noise = out["weight"] - w
        assert noise.std().item() == pytest.approx(s * w.std(unbiased=False).item(), rel=0.01)
        assert abs(noise.mean().item()) < 0.01 * s * w.std().item() * 5
        bnoise = out["bias"] - b
        assert bnoise.std().item() == pytest.approx(s * b.std(unbiased=False).item(), rel=0.05)


def test_level_zero_is_identity_for_every_perturbation():
    p = nonzero_params()
    for name in ("synapse_knockout", "node_knockout", "gaussian_noise"):
        assert make_perturbation(name)(p, 0.0, cell_generator(0)) == {}


def test_same_seed_same_result_different_seed_different_result():
    p = nonzero_params()
    for pert in (SynapseKnockout(), NodeKnockout(), GaussianNoise()):
        a = pert(p, 0.5, cell_generator(42))
        b = pert(p, 0.5, cell_generator(42))
        c = pert(p, 0.5, cell_generator(43))
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name,level", [("synapse_knockout", 1.5), ("node_knockout", -0.1), ("gaussian_noise", float("nan"))])
def test_out_of_range_levels_raise(name, level):
    with pytest.raises(ValueError, match=name):
        make_perturbation(name)(nonzero_params(), level, cell_generator(0))


def test_unknown_perturbation_or_option_raise():
    with pytest.raises(ValueError, match="known: .*gaussian_noise, .*node_knockout, .*synapse_knockout"):
        make_perturbation("dropout")
    with pytest.raises(ValueError, match="bad options"):
        make_perturbation("synapse_knockout", bn_aware=True)
