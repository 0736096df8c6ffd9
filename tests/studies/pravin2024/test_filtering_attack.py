"""Adversarial evaluation of filtered networks: white-box through functional_call, reuse mode,
agreement with a naive filtered copy attacked by torchattacks."""

import copy

import pytest
import torch
import torch.nn.functional as F

from netperturb.core.attacks import fgsm, pgd
from netperturb.studies.pravin2024.evaluator import AttackSpec, Evaluator, adversarial_set, clean_and_adversarial
from netperturb.studies.pravin2024.sweeps import layer_sweep
from netperturb.perturb.filters import HighPassFilter
from netperturb.core.layers import find_layers


@pytest.fixture
def filtered(convbn):
    """The ConvBNNet, the override of its second conv (high filter at its weights' median),
    a naive copy with that weight replaced in place, inputs in [0, 1] and labels."""
    layer = find_layers(convbn)[1]
    w = convbn.get_submodule(layer.path).weight.detach()
    alpha = float(w.detach().median())
    new = HighPassFilter()({"weight": w}, alpha)["weight"]
    naive = copy.deepcopy(convbn)
    with torch.no_grad():
        naive.get_submodule(layer.path).weight.copy_(new)
    torch.manual_seed(1)
    x = torch.rand(32, 1, 8, 8)
    y = torch.arange(32) % 10
    return convbn, {f"{layer.path}.weight": new}, naive.eval(), x, y


def test_regenerated_fgsm_matches_torchattacks_on_the_filtered_copy(filtered):
    torchattacks = pytest.importorskip("torchattacks")
    net, over, naive, x, y = filtered
    spec = AttackSpec(eps=0.1, clamp=True)
    ours = adversarial_set(net, x, y, spec, overrides=over, box=(0.0, 1.0), batch_size=7)
    ref = torchattacks.FGSM(naive, eps=0.1)(x, y)
    assert torch.allclose(ours, ref, atol=1e-6)
    # and it is an attack on the *filtered* network: its loss goes up
    with torch.no_grad():
        assert F.cross_entropy(naive(ours), y) > F.cross_entropy(naive(x), y)
    # the fused FGSM equals netperturb.attacks.fgsm on the functional forward
    fwd = lambda inp: torch.func.functional_call(net, over, (inp,))  # noqa: E731
    assert torch.equal(adversarial_set(net, x, y, AttackSpec(eps=0.1), overrides=over, batch_size=32), fgsm(fwd, x, y, 0.1))


def test_clean_and_adversarial_counts_equal_the_naive_path(filtered):
    net, over, naive, x, y = filtered
    spec = AttackSpec(eps=0.2)
    clean, adv = clean_and_adversarial(net, x, y, spec, overrides=over, batch_size=10)
    x_adv = fgsm(naive, x, y, 0.2)
    with torch.no_grad():
        assert clean.loss_sum == pytest.approx(F.cross_entropy(naive(x), y, reduction="sum").item(), rel=1e-5)
        assert adv.loss_sum == pytest.approx(F.cross_entropy(naive(x_adv), y, reduction="sum").item(), rel=1e-5)
        assert clean.top1 == pytest.approx((naive(x).argmax(1) == y).sum().item())
        assert adv.top1 == pytest.approx((naive(x_adv).argmax(1) == y).sum().item())
    assert adv.loss_sum > clean.loss_sum  # the attack raises the loss of the filtered network
    # the unfiltered network is attacked separately: different examples, different counts
    _, adv0 = clean_and_adversarial(net, x, y, spec, batch_size=10)
    assert adv0.loss_sum != adv.loss_sum
    with pytest.raises(ValueError, match="eval"):
        clean_and_adversarial(copy.deepcopy(net).train(), x, y, spec)


def test_reuse_mode_evaluates_on_the_set_made_against_the_unfiltered_network(filtered):
    net, over, naive, x, y = filtered
    spec = AttackSpec(eps=0.2, mode="reuse")
    ev = Evaluator(net, x, y, spec, study_seed=3, model_key="m", batch_size=9)
    x_adv = fgsm(net, x, y, 0.2)  # made once, against the unfiltered network
    assert torch.equal(ev.x_adv(), x_adv)
    mask = {next(iter(over)): torch.ones(1, dtype=torch.bool)}
    clean, adv = ev(over, mask, seed=0)
    with torch.no_grad():
        assert adv.top1 == pytest.approx((naive(x_adv).argmax(1) == y).sum().item())
    with pytest.raises(ValueError, match="x_adv"):
        clean_and_adversarial(net, x, y, spec)


def test_pgd_is_seeded_and_independent_of_the_batch_split(filtered):
    net, over, naive, x, y = filtered
    spec = AttackSpec(name="pgd", eps=0.1, steps=3)
    a = clean_and_adversarial(net, x, y, spec, overrides=over, seed=11, batch_size=32)
    b = clean_and_adversarial(net, x, y, spec, overrides=over, seed=11, batch_size=5)
    assert a[1].top1 == b[1].top1 and a[1].loss_sum == pytest.approx(b[1].loss_sum, rel=1e-6)
    fwd = lambda inp: torch.func.functional_call(net, over, (inp,))  # noqa: E731
    from netperturb.core.seeds import cell_generator

    ref = pgd(fwd, x, y, 0.1, steps=3, generator=cell_generator(11))
    assert torch.allclose(adversarial_set(net, x, y, spec, overrides=over, seed=11, batch_size=6), ref, atol=1e-6)


def test_layer_sweep_rows_and_cache(convbn):
    layer = find_layers(convbn)[0]
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    ev = Evaluator(convbn, x, y, AttackSpec(eps=0.05), study_seed=1, model_key="m/init0/epoch1")

    rows = layer_sweep(ev, layer, ["low", "high", "pulse"], 7, row={"study": "s"}, progress=False)
    assert len(rows) == 3 * 7 * 2
    w = convbn.get_submodule(layer.path).weight.detach()
    low = [r for r in rows if r["perturbation"] == "filter_low" and r["data"] == "clean"]
    assert [r["step"] for r in low] == list(range(7)) and low[0]["level"] == float(w.min()) and low[-1]["level"] == float(w.max())
    assert low[-1]["n_filtered"] == w.numel() and low[0]["n_filtered"] == 1
    high = [r for r in rows if r["perturbation"] == "filter_high" and r["data"] == "clean"]
    assert high[0]["level"] == float(w.max()) and high[-1]["n_filtered"] == w.numel()
    # the fully zeroed layer is the same network for both step filters: one evaluation, same numbers
    assert low[-1]["top1"] == high[-1]["top1"] and low[-1]["loss"] == high[-1]["loss"]
    assert len(ev._cache) < 3 * 7
    assert all(r["study"] == "s" and r["mode"] == "layer" for r in rows)
