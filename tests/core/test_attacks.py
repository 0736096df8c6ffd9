"""FGSM / PGD: they raise the loss and agree with the reference library (torchattacks)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netperturb.core.attacks import attack_batches, fgsm, pgd


@pytest.fixture
def net_and_data():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()
    x = torch.rand(16, 1, 8, 8)
    y = net(x).argmax(1)  # labels the net gets right, so the attack has something to break
    return net, x, y


def test_fgsm_matches_torchattacks_and_raises_loss(net_and_data):
    torchattacks = pytest.importorskip("torchattacks")
    net, x, y = net_and_data
    ours = fgsm(net, x, y, 0.1, clamp=(0.0, 1.0))
    ref = torchattacks.FGSM(net, eps=0.1)(x, y)
    assert torch.allclose(ours, ref, atol=1e-6)
    assert (ours - x).abs().max() <= 0.1 + 1e-6
    assert F.cross_entropy(net(ours), y) > F.cross_entropy(net(x), y)


def test_pgd_matches_torchattacks_without_random_start(net_and_data):
    torchattacks = pytest.importorskip("torchattacks")
    net, x, y = net_and_data
    ours = pgd(net, x, y, 0.1, steps=7, step_size=0.02, random_start=False, clamp=(0.0, 1.0))
    ref = torchattacks.PGD(net, eps=0.1, alpha=0.02, steps=7, random_start=False)(x, y)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert F.cross_entropy(net(ours), y) > F.cross_entropy(net(fgsm(net, x, y, 0.02)), y) * 0.99


def test_pgd_stays_in_ball_and_is_seeded(net_and_data):
    net, x, y = net_and_data
    a = pgd(net, x, y, 0.05, steps=3, generator=torch.Generator().manual_seed(1))
    b = pgd(net, x, y, 0.05, steps=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert (a - x).abs().max() <= 0.05 + 1e-6


def test_eps_zero_is_identity_and_batches_agree(net_and_data):
    net, x, y = net_and_data
    assert torch.equal(fgsm(net, x, y, 0.0), x)
    whole = fgsm(net, x, y, 0.1)
    assert torch.allclose(attack_batches(fgsm, net, x, y, batch_size=5, eps=0.1), whole)
    with pytest.raises(ValueError):
        fgsm(net, x, y, -1)
