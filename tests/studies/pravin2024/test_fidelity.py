"""The authors' definitions (SynapFilter/InferLink) pinned on hand-computed values: rob_value,
FGSM budgets in pixel units converted per dataset and per channel, per-(model, dataset)
overrides, the whole-network budget."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from netperturb.core.preprocess import Preprocess
from netperturb.studies.pravin2024.budgets import AUTHORS_STD, authors_eps_to_pixel, input_eps
from netperturb.studies.pravin2024.evaluator import AttackSpec, adversarial_set
from netperturb.studies.pravin2024.plan import attack_eps, network_eps
from netperturb.studies.pravin2024.scores import filtering_scores, rob_value

REPO = Path(__file__).resolve().parents[3]

T = [0.0, 0.25, 0.5, 0.75, 1.0]
OG = [0.8, 0.8, 0.6, 0.4, 0.0]
ADV = [0.4, 0.4, 0.3, 0.2, 0.1]
N_FILTERED = [0, 25, 50, 75, 100]  # of 100 weights: dens_bar = 1 - t


def test_rob_value_of_a_hand_made_curve():
    # og/og[0] = [1, 1, .75, .5, 0]; minus dens_bar [1, .75, .5, .25, 0] = [0, .25, .25, .25, 0]
    # Simpson, h = 1/4: h/3 (0 + 4 .25 + 2 .25 + 4 .25 + 0) = (1/12) 2.5 = 5/24
    # adv/adv[0] = [1, 1, .75, .5, .25]; minus dens_bar = [0, .25, .25, .25, .25] -> (1/12) 2.75 = 11/48
    # difference: adv/adv[0] - og/og[0] = [0, 0, 0, 0, .25] -> (1/12) .25 = 1/48
    c, a, d = rob_value(OG, ADV, N_FILTERED, 100, T)
    assert c == pytest.approx(5 / 24, abs=1e-15)
    assert a == pytest.approx(11 / 48, abs=1e-15)
    assert d == pytest.approx(1 / 48, abs=1e-15)
    # a first point of 0 leaves the curve undefined
    c, a, d = rob_value(OG, [0.0] * 5, N_FILTERED, 100, T)
    assert c == pytest.approx(5 / 24) and math.isnan(a) and math.isnan(d)
    with pytest.raises(ValueError):
        rob_value(OG, ADV, N_FILTERED, 0, T)


def _table(a_c=0.9, a_a=0.5):
    rows = []
    for data, acc in (("clean", OG), ("adversarial", ADV)):
        for i, (t, v, n) in enumerate(zip(T, acc, N_FILTERED)):
            rows.append({"study": "s", "dataset": "d", "model": "m", "arch": "a", "init": 0, "epoch": 1, "mode": "layer",
                         "layer": "conv1", "layer_label": "conv1", "layer_index": 1, "perturbation": "filter_low",
                         "position": t, "step": i, "data": data, "top1": v, "n_filtered": n, "n_weights": 100,
                         "eps": 0.1})  # fmt: skip
    base = pd.DataFrame([{"model": "m", "init": 0, "epoch": 1, "data": "clean", "top1": a_c, "eps": 0.1},
                         {"model": "m", "init": 0, "epoch": 1, "data": "adversarial", "top1": a_a, "eps": 0.1}])  # fmt: skip
    return pd.DataFrame(rows), base


def test_both_score_definitions_on_the_sweep_table():
    sw, base = _table()
    authors = filtering_scores(sw, base, tolerance=0.05).set_index("score")["value"]  # defaults: first_point, density
    assert authors.to_dict() == pytest.approx({"clean": 5 / 24, "adversarial": 11 / 48, "difference": 1 / 48}, abs=1e-15)
    s = filtering_scores(sw, base, tolerance=0.05, normalise="clean", baseline="constant")
    assert set(s["normalise"]) == {"clean"} and set(s["baseline"]) == {"constant"}
    ours = s.set_index("score")["value"]
    # og / 0.9 - 1: Simpson (1/12)(4 (-.1/.9) + 2 (-.3/.9) + 4 (-.5/.9) + (-.9/.9)) ...
    h = 0.25 / 3
    f = lambda y: h * (y[0] + 4 * y[1] + 2 * y[2] + 4 * y[3] + y[4])  # noqa: E731
    c = f([v / 0.9 - 1 for v in OG])
    a = f([v / 0.9 - 0.5 / 0.9 for v in ADV])
    assert ours.to_dict() == pytest.approx({"clean": c, "adversarial": a, "difference": a - c}, abs=1e-15)
    # mixed: each curve by its first point, the unfiltered network's value as a constant baseline
    mixed = filtering_scores(sw, base, normalise="first_point", baseline="constant").set_index("score")["value"]
    assert mixed["clean"] == pytest.approx(f([v / 0.8 - 0.9 / 0.8 for v in OG]), abs=1e-15)
    with pytest.raises(ValueError, match="normalise 'x'"):
        filtering_scores(sw, base, normalise="x")
    with pytest.raises(ValueError, match="no baseline .* eps 0.2"):
        filtering_scores(sw.assign(eps=0.2), base)


def test_authors_eps_in_pixel_units():
    assert authors_eps_to_pixel(0.38, "mnist") == pytest.approx(0.117078, abs=1e-12)  # 0.38 x 0.3081
    assert authors_eps_to_pixel(0.03, "mnist") == pytest.approx(0.009243, abs=1e-12)
    assert authors_eps_to_pixel(0.015, "cifar10") == pytest.approx(0.0075, abs=1e-15)  # mean = std = 0.5
    assert authors_eps_to_pixel(0.5, "tiny_imagenet") == 0.5  # no normalisation
    assert AUTHORS_STD == {"mnist": 0.3081, "cifar10": 0.5, "tiny_imagenet": 1.0}
    with pytest.raises(ValueError, match="digits"):
        authors_eps_to_pixel(0.1, "digits")


def test_pixel_budget_in_our_input_units_per_channel():
    assert input_eps(0.117078, (0.3081,)) == pytest.approx(0.38, abs=1e-12)
    e = input_eps(0.0075, (0.25, 0.5, 0.125))
    assert e.shape == (1, 3, 1, 1) and e.dtype == torch.float32 and e.flatten().tolist() == pytest.approx([0.03, 0.015, 0.06], rel=1e-7)
    with pytest.raises(ValueError):
        input_eps(0.1, (0.0,))
    # FGSM through the spec moves each channel by eps / std_c
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).eval()
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 5, (8,))
    spec = AttackSpec(eps=0.0075).for_input(Preprocess(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 0.125)))
    step = (adversarial_set(net, x, y, spec) - x).abs()
    for ch, want in enumerate([0.03, 0.015, 0.06]):
        assert torch.allclose(step[:, ch], torch.full_like(step[:, ch], want), atol=1e-6)


def test_paper_config_budgets_are_the_authors_converted():
    cfg = yaml.safe_load((REPO / "config" / "pravin2024-mnist.yaml").read_text())["pravin2024"]
    px = authors_eps_to_pixel
    assert cfg["attack"]["eps"] == pytest.approx({"mnist": px(0.38, "mnist"), "cifar10": px(0.015, "cifar10"),
                                                  "tiny_imagenet": px(0.5, "tiny_imagenet")})  # fmt: skip
    assert cfg["attack"]["network_eps"] == pytest.approx({"mnist": px(0.03, "mnist")})
    assert cfg["models"]["resnet50"]["eps"] == pytest.approx({"mnist": px(0.75, "mnist"), "cifar10": px(0.02, "cifar10")})
    assert cfg["models"]["squeezenet1_1"]["eps"] == pytest.approx({"mnist": px(0.8, "mnist")})
    assert cfg["schedule"] == "constant" and cfg["score"] == {"normalise": "first_point", "baseline": "density"}


def test_model_overrides_are_per_model_and_dataset():
    cfg = yaml.safe_load((REPO / "config" / "pravin2024-mnist.yaml").read_text())["pravin2024"]
    assert attack_eps(cfg, "squeezenet1_1", "mnist") == pytest.approx(0.24648)
    assert attack_eps(cfg, "resnet50", "mnist") == pytest.approx(0.231075)
    # switching the dataset to CIFAR-10 drops the MNIST overrides
    assert attack_eps(cfg, "squeezenet1_1", "cifar10") == pytest.approx(0.0075)
    assert attack_eps(cfg, "resnet50", "cifar10") == pytest.approx(0.01)
    assert attack_eps(cfg, "resnet18", "tiny_imagenet") == 0.5
    # whole-network mode: its own budget where the authors have one, else the per-layer one
    assert network_eps(cfg, "resnet18", "mnist") == pytest.approx(0.009243)
    assert network_eps(cfg, "resnet50", "mnist") == pytest.approx(0.009243)
    assert network_eps(cfg, "resnet50", "cifar10") == pytest.approx(0.01)
    from netperturb.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"pravin2024.attack.eps.digits: not set, and pravin2024.models.resnet50.eps.digits"):
        attack_eps(cfg, "resnet50", "digits")


def test_density_baseline_reads_n_filtered_per_point():
    sw, base = _table()
    # a pulse-like sweep: at most 40 of 100 weights removed at once; dens_bar = 1 - n / 100 (not / 40)
    n = [10, 40, 20, 30, 10]
    sw["n_filtered"] = np.tile(n, 2)
    c, a, d = rob_value(OG, ADV, n, 100, T)
    got = filtering_scores(sw, base).set_index("score")["value"]
    assert got.to_dict() == pytest.approx({"clean": c, "adversarial": a, "difference": d}, abs=1e-15)
