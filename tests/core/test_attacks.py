"""FGSM / PGD: budgets in pixel units, identical to the reference library (torchattacks 3.5.1)
when eps is in the same space, and the pixel budget equals the old call in normalised units."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netperturb.core.attacks import attack_batches, fgsm, fgsm_step, input_eps, pgd

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.5, 0.125)


@pytest.fixture
def net_and_data():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()
    x = torch.rand(64, 1, 8, 8)
    y = net(x).argmax(1)  # labels the net gets right, so the attack has something to break
    return net, x, y


@pytest.fixture
def rgb():
    """A 3-channel net that takes *normalised* inputs, pixels in [0, 1], their normalised values."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 10)).eval()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    pixels = torch.rand(32, 3, 8, 8)
    xn = (pixels - mean) / std
    y = net(xn).argmax(1)
    return net, pixels, xn, y, mean, std


def test_fgsm_identical_to_torchattacks_and_raises_loss(net_and_data):
    torchattacks = pytest.importorskip("torchattacks")
    net, x, y = net_and_data
    for eps in (0.1, 8 / 255, 0.3):
        ours = fgsm(net, x, y, eps, clamp=(0.0, 1.0))
        assert torch.equal(ours, torchattacks.FGSM(net, eps=eps)(x, y)), eps
    assert (ours - x).abs().max() <= 0.3 + 1e-6
    assert F.cross_entropy(net(ours), y) > F.cross_entropy(net(x), y)


@pytest.mark.parametrize("eps, alpha, steps", [(0.1, 0.02, 7), (8 / 255, 2 / 255, 10), (0.3, 0.01, 40)])
def test_pgd_identical_to_torchattacks_without_random_start(net_and_data, eps, alpha, steps):
    torchattacks = pytest.importorskip("torchattacks")
    net, x, y = net_and_data
    ours = pgd(net, x, y, eps, steps=steps, step_size=alpha, random_start=False, clamp=(0.0, 1.0))
    ref = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    assert torch.equal(ours, ref)
    assert (ours - x).abs().max() <= eps + 1e-6
    assert F.cross_entropy(net(ours), y) > F.cross_entropy(net(fgsm(net, x, y, alpha)), y) * 0.99


def test_pixel_space_attacks_identical_to_torchattacks_with_normalization(rgb):
    """A model on normalised inputs attacked in pixel space: torchattacks'
    ``set_normalization_used`` (it takes normalised images, attacks their pixels and returns
    them normalised) and our attacks on the pixels through a forward that normalises give
    identical images."""
    torchattacks = pytest.importorskip("torchattacks")
    net, _, xn, y, mean, std = rgb
    pixels = xn * std + mean  # what torchattacks attacks

    def forward(p):
        return net((p - mean) / std)

    ref = torchattacks.FGSM(net, eps=0.05)
    ref.set_normalization_used(mean=list(MEAN), std=list(STD))
    ours = fgsm(forward, pixels, y, 0.05, clamp=(0.0, 1.0))
    assert torch.equal((ours - mean) / std, ref(xn, y))
    ref = torchattacks.PGD(net, eps=0.05, alpha=0.01, steps=5, random_start=False)
    ref.set_normalization_used(mean=list(MEAN), std=list(STD))
    ours = pgd(forward, pixels, y, 0.05, steps=5, step_size=0.01, random_start=False, clamp=(0.0, 1.0))
    assert torch.equal((ours - mean) / std, ref(xn, y))


def test_pixel_eps_equals_the_old_call_in_normalised_units(net_and_data, rgb):
    """One std for every channel: the pixel budget with ``std`` is the old call with eps / std
    (normalised units), bit for bit; per channel: each channel moves by exactly eps / std_c."""
    net, x, y = net_and_data
    xn = (x - 0.5) / 0.25
    assert torch.equal(fgsm(net, xn, y, 0.05, std=(0.25,)), fgsm(net, xn, y, 0.2))
    assert torch.equal(fgsm(net, xn, y, 0.05, std=0.25), fgsm(net, xn, y, 0.2))
    assert torch.equal(pgd(net, xn, y, 0.05, std=(0.25,), steps=3, step_size=0.02, random_start=False),
                       pgd(net, xn, y, 0.2, steps=3, step_size=0.08, random_start=False))  # fmt: skip
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(pgd(net, xn, y, 0.05, std=(0.25,), steps=3, generator=g()), pgd(net, xn, y, 0.2, steps=3, generator=g()))
    # per channel (the budget is a (1, C, 1, 1) tensor eps / std_c inside)
    net3, _, xn3, y3, _, std = rgb
    xg = xn3.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(net3(xg), y3), xg)
    want = xn3 + (0.03 / torch.tensor(STD, dtype=torch.float64)).float().view(1, 3, 1, 1) * grad.sign()
    assert torch.equal(fgsm(net3, xn3, y3, 0.03, std=STD), want)
    assert torch.equal(fgsm_step(xn3, grad, 0.03, std=STD), want)
    step = (fgsm(net3, xn3, y3, 0.03, std=STD) - xn3).abs().amax(dim=(0, 2, 3))
    assert step.tolist() == pytest.approx([0.03 / s for s in STD], rel=1e-6)
    assert isinstance(input_eps(0.1, None), float) and input_eps(0.1, None) == 0.1


def test_pgd_stays_in_ball_and_is_seeded(net_and_data):
    net, x, y = net_and_data
    a = pgd(net, x, y, 0.05, steps=3, generator=torch.Generator().manual_seed(1))
    b = pgd(net, x, y, 0.05, steps=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert (a - x).abs().max() <= 0.05 + 1e-6


def test_eps_zero_is_identity_and_batches_agree(net_and_data):
    net, x, y = net_and_data
    assert torch.equal(fgsm(net, x, y, 0.0), x)
    assert torch.equal(pgd(net, x, y, 0.0), x)
    whole = fgsm(net, x, y, 0.1)
    assert torch.equal(attack_batches(fgsm, net, x, y, batch_size=5, eps=0.1), whole)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_budgets_outside_the_pixel_range_are_refused(net_and_data, bad):
    net, x, y = net_and_data
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\]"):
        fgsm(net, x, y, bad)
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\]"):
        pgd(net, x, y, bad)
    with pytest.raises(ValueError, match=r"step_size must be in \[0, 1\]"):
        pgd(net, x, y, 0.1, step_size=bad)
    with pytest.raises(ValueError, match="std must be > 0"):
        fgsm(net, x, y, 0.1, std=(0.0,))
