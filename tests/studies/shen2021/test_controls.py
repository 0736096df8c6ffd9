"""The controls of the Min-Max claim (netperturb.studies.shen2021.controls) and the verdicts they
imply: a network whose weights only diffuse never gives "holds" under any reading; weights that
drift to the ends of their interval give "holds" against both controls."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from netperturb.core.layers import find_layers
from netperturb.studies.shen2021.controls import (
    SHUFFLED,
    WALK,
    DriftlessWalk,
    control_margins,
    shuffled_labels,
)
from netperturb.studies.shen2021.findings import FALL_CLAIM, fall_finding, findings, margin_summary
from netperturb.studies.shen2021.intervals import READINGS
from netperturb.studies.shen2021.link import partial_correlation, robustness_link, seed_pairs
from netperturb.studies.shen2021.minmax import WeightTracker


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.Linear(8, 4))


def test_driftless_walk_takes_the_runs_steps_with_random_signs():
    torch.manual_seed(0)
    net = _net()
    layers = find_layers(net)
    walk = DriftlessWalk(net, layers, seed=7)
    path = layers[0].path
    w = net.get_submodule(path).weight
    v0 = walk.get_submodule(path).weight.clone()
    assert torch.equal(v0, w.detach().double())  # starts at the initialisation
    prev_w, prev_v, flips = w.detach().double().clone(), v0, []
    for _ in range(20):
        with torch.no_grad():
            w.add_(torch.randn_like(w) * 0.01)
        walk.update(net)
        v = walk.get_submodule(path).weight.clone()
        dw, dv = w.detach().double() - prev_w, v - prev_v
        assert torch.allclose(dv.abs(), dw.abs(), rtol=0, atol=1e-15)  # the run's own step sizes
        flips.append((torch.sign(dv) != torch.sign(dw)).double().mean().item())
        prev_w, prev_v = w.detach().double().clone(), v
    assert walk.steps == 20
    assert 0.4 < np.mean(flips) < 0.6  # each sign +-1 with probability 1/2
    again = DriftlessWalk(net, layers, seed=7)  # same seed, same signs
    assert torch.equal(again._gen.get_state(), DriftlessWalk(net, layers, seed=7)._gen.get_state())


def test_shuffled_labels_keep_the_class_counts_and_are_seeded():
    y = torch.arange(100) % 10
    a, b = shuffled_labels(y, 3), shuffled_labels(y, 3)
    assert torch.equal(a, b) and not torch.equal(a, y)
    assert torch.equal(torch.bincount(a), torch.bincount(y))
    assert (a == y).float().mean() < 0.3


def _run(seed: int, kind: str, steps: int = 60, control: str = "none", walk: bool = True) -> pd.DataFrame:
    """Tracking of one synthetic 'training' from the initialisation of ``seed``: ``kind`` =
    "diffuse" (every weight takes N(0, s) steps: no drift) or "drift" (every weight moves
    towards the nearer end, ``w += eta * sign(w)``, plus noise)."""
    torch.manual_seed(seed)  # the same initialisation for every run of a seed
    net = _net()
    layers = find_layers(net)
    g = torch.Generator().manual_seed(1000 * seed + (1 if control != "none" else 0) + (2 if kind == "drift" else 0))
    tracker = WeightTracker(layers, steps_per_epoch=steps, steps=(), bins=4,
                            meta={"model": f"m{seed}{control}", "lam": 0.0, "train_seed": seed}, readings=READINGS,
                            control=control, walk_seed=seed if walk else None)  # fmt: skip
    tracker.on_epoch_end(0, net, {})
    for step in range(1, steps + 1):
        with torch.no_grad():
            for info in layers:
                w = net.get_submodule(info.path).weight
                scale = 0.02 * w.abs().max()
                step_w = torch.randn(w.shape, generator=g) * scale
                if kind == "drift":
                    step_w = 0.3 * step_w + scale * torch.sign(w)
                w.add_(step_w)
        tracker.on_step(1, step, net)
    tracker.on_epoch_end(1, net, {})
    return tracker.stats()


def _tracking(kind: str, seeds=(0, 1, 2)) -> pd.DataFrame:
    return pd.concat([_run(s, kind) for s in seeds] + [_run(s, "diffuse", control=SHUFFLED, walk=False) for s in seeds],
                     ignore_index=True)  # fmt: skip


@pytest.mark.parametrize("offset", [0, 10, 20])
def test_a_driftless_walk_never_holds_under_any_reading(offset):
    """The trained run is itself diffusion: compared with its own driftless walk and a
    diffusing control, no reading may say the weights moved to the ends."""
    track = _tracking("diffuse", seeds=(offset, offset + 1, offset + 2))
    assert set(track["control"]) == {"none", WALK, SHUFFLED}
    for reading in READINGS:
        m = control_margins(track, reading)
        assert set(m["comparator"]) == ({WALK, SHUFFLED} | ({"own fall"} if reading != "trajectory" else set()))
        f = fall_finding(m, reading)
        assert f.verdict in ("does not hold", "undetermined"), (reading, f.found)
        assert f.n == 3 and f.lo < f.hi and f.threshold == 0 and f.direction == ">"


def test_a_planted_drift_to_the_ends_holds_against_both_controls():
    track = _tracking("drift")
    for reading in ("current", "trajectory"):
        f = fall_finding(control_margins(track, reading), reading)
        assert f.verdict == "holds", (reading, f.found)
        assert f.lo > 0 and WALK in f.control and SHUFFLED in f.control


def test_margins_are_paired_by_seed_and_defined_as_documented():
    track = _tracking("diffuse", seeds=(0, 1))
    m = control_margins(track, "current")
    t = track[(track["interval"] == "current") & (track["scope"] == "layer")]
    for r in m.itertuples():
        f = t[(t["train_seed"] == r.train_seed) & (t["layer_index"] == r.layer_index)]
        end = lambda c: f[(f["control"] == c) & (f["epoch"] == 1)]["fuzziness"].iloc[0]
        start = f[(f["control"] == "none") & (f["epoch"] == 0)]["fuzziness"].iloc[0]
        if r.comparator == "own fall":
            assert r.margin == pytest.approx(start - end("none"))
        else:
            assert r.margin == pytest.approx(end(r.comparator) - end("none"))
        # every run of a seed starts from the same weights: the same F at initialisation
        assert f[f["epoch"] == 0]["fuzziness"].nunique() == 1
    s = margin_summary(m)
    assert (s["n_seeds"] == 2).all() and (s["margin_lo"] <= s["margin_mean"]).all()


def test_without_controls_the_finding_says_so():
    track = pd.concat([_run(s, "drift", walk=False) for s in (0, 1, 2)], ignore_index=True)
    f = fall_finding(control_margins(track, "current"), "current")
    assert f.claim.startswith(FALL_CLAIM) and "not run" in f.control and f.verdict == "holds"


def test_init_bound_leaves_weights_beyond_the_bound_out():
    track = _tracking("drift", seeds=(0,))
    ib = track[(track["interval"] == "init_bound") & (track["scope"] == "layer") & (track["control"] == "none")]
    end = ib[ib["epoch"] == 1]
    # the drift carries weights beyond +-1/sqrt(fan_in): they are counted there, not as F = 0
    assert (end["frac_outside"] > 0.5).all()
    assert ((end["frac_ends"] <= 1) | end["frac_ends"].isna()).all()


def test_partial_correlation_holds_lambda_fixed():
    rng = np.random.default_rng(0)
    lam = np.repeat([0.0, 0.3, 1.0, 3.0], 5)
    # lambda drives both (pooled r strongly negative) but within a lambda they are unrelated
    f = -lam + rng.normal(0, 0.1, lam.size)
    a = lam + rng.normal(0, 0.1, lam.size)
    pc = partial_correlation(f, a, lam)
    assert np.corrcoef(f, a)[0, 1] < -0.9
    assert pc["lo"] < 0 < pc["hi"] and pc["k"] == 3 and pc["df"] == 20 - 3 - 2
    # a planted within-lambda link: holds
    a2 = lam - 2 * (f + lam) + rng.normal(0, 0.02, lam.size)
    pc2 = partial_correlation(f, a2, lam)
    assert pc2["hi"] < 0 and pc2["p_value"] < 1e-6
    # centring by hand
    fc = f - pd.Series(f).groupby(lam).transform("mean")
    ac = a - pd.Series(a).groupby(lam).transform("mean")
    assert pc["r"] == pytest.approx(np.corrcoef(fc, ac)[0, 1])


def test_seed_pairs_and_link_finding():
    pts = pd.DataFrame({"attack": "fgsm", "lam": [0, 0, 0, 1, 1, 1], "train_seed": [0, 1, 2] * 2,
                        "fuzziness": [0.5, 0.4, 0.3, 0.2, 0.1, 0.15], "accuracy": [0.1, 0.2, 0.3, 0.5, 0.6, 0.4]})
    assert seed_pairs(pts) == {"agree": 5, "disagree": 1, "tied": 0}  # lam 1: (0,2) disagrees
    link = robustness_link(pts.assign(eps=0.1))
    assert link.loc[0, "pairs_agree"] == 5 and link.loc[0, "n"] == 6 and link.loc[0, "n_lambdas"] == 2
    (fall, corr) = findings(control_margins(_tracking("drift", seeds=(0, 1, 2)), "current").assign(interval="current"),
                            link)  # fmt: skip
    assert corr.verdict in ("holds", "undetermined", "does not hold") and corr.direction == "<"
    assert corr.estimate == pytest.approx(link.loc[0, "partial_r"]) and "5 agree, 1 disagree" in corr.found
