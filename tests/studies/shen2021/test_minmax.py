"""The Min-Max study's definitions (netperturb.minmax) and jobs (netperturb.minmax_study):
hand-computed fuzziness and positions, the regulariser's gradient against finite differences,
weight tracking at every epoch, attacks, paired perturbation draws, config checks, summaries."""

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from netperturb.core.config import ConfigError, config_errors
from netperturb.core.preprocess import Preprocess
from netperturb.datasets.shards import load_split, read_manifest
from netperturb.core.evaluate import evaluate
from netperturb.core.layers import find_layers, select_layers
from netperturb.studies.shen2021.minmax import FuzzinessRegularizer, WeightTracker, differentiable_fuzziness, first_epoch_steps, fuzziness, interval_position, pixel_space, robust_accuracy, weight_histograms, weight_stats
from netperturb.models import get_model
from netperturb.core.training import TrainConfig, train_classifier

REPO = Path(__file__).resolve().parents[3]
LN2 = math.log(2)
H_QUARTER = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # fuzziness of mu = 1/4


def test_fuzziness_hand_values():
    assert fuzziness(torch.tensor([0.0, 1.0, 1.0, 0.0])).item() == 0.0  # 0 ln 0 = 0
    assert fuzziness(torch.full((5,), 0.5, dtype=torch.float64)).item() == pytest.approx(LN2, abs=1e-15)
    mixed = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    assert fuzziness(mixed).item() == pytest.approx((H_QUARTER + LN2) / 4, abs=1e-15)
    assert fuzziness(torch.tensor([0.25, 0.75], dtype=torch.float64)).item() == pytest.approx(H_QUARTER, abs=1e-15)
    rows = torch.tensor([[0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    assert torch.allclose(fuzziness(rows, dim=1), torch.tensor([0.0, LN2], dtype=torch.float64))
    with pytest.raises(ValueError, match="mu must lie in"):
        fuzziness(torch.tensor([0.5, 1.5]))


def _conv_with(weight: torch.Tensor) -> nn.Module:
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), bias=False)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return nn.Sequential(conv)


# two 1x1x3 kernels: [-1, 0, 1] and [2, 3, 6]; layer interval [-1, 6]
W = torch.tensor([[-1.0, 0.0, 1.0], [2.0, 3.0, 6.0]]).view(2, 1, 1, 3)


def test_interval_position_layer_and_kernel():
    layer = interval_position(W, "layer").flatten()
    assert torch.allclose(layer, torch.tensor([0, 1, 2, 3, 4, 7]) / 7)
    kernel = interval_position(W, "kernel").view(2, 3)
    assert torch.allclose(kernel, torch.tensor([[0, 0.5, 1], [0, 0.25, 1]]))
    flat = interval_position(torch.tensor([[1.0, 1.0], [0.0, 2.0]]), "kernel")
    assert torch.isnan(flat[0]).all() and torch.equal(flat[1], torch.tensor([0.0, 1.0]))  # degenerate interval
    with pytest.raises(ValueError, match="scope"):
        interval_position(W, "filter")


def test_weight_stats_and_histograms_by_hand():
    model = _conv_with(W)
    layers = find_layers(model)
    st = weight_stats(model, layers, end_fraction=0.1)
    lay = st[st["scope"] == "layer"].iloc[0]
    mu = np.array([0, 1, 2, 3, 4, 7]) / 7
    h = -(mu[1:-1] * np.log(mu[1:-1]) + (1 - mu[1:-1]) * np.log(1 - mu[1:-1]))
    assert lay["n_weights"] == 6 and lay["kernel"] == -1 and (lay["w_min"], lay["w_max"]) == (-1, 6)
    assert lay["fuzziness"] == pytest.approx(h.sum() / 6, abs=1e-12)
    assert (lay["frac_low"], lay["frac_high"], lay["frac_ends"]) == (pytest.approx(1 / 6), pytest.approx(1 / 6), pytest.approx(2 / 6))
    ker = st[st["scope"] == "kernel"].set_index("kernel")
    assert list(ker.index) == [0, 1] and (ker["n_weights"] == 3).all()
    assert ker.loc[0, "fuzziness"] == pytest.approx(LN2 / 3) and ker.loc[1, "fuzziness"] == pytest.approx(H_QUARTER / 3)
    assert ker["frac_ends"].tolist() == pytest.approx([2 / 3, 2 / 3])
    assert ker.loc[1, "w_mean"] == pytest.approx(11 / 3) and ker.loc[0, "w_std"] == pytest.approx(1.0)
    hist = weight_histograms(model, layers, bins=4)
    lh = hist[hist["scope"] == "layer"].sort_values("bin")
    assert lh["count"].tolist() == [2, 2, 1, 1]  # 0, 1/7 | 2/7, 3/7 | 4/7 | 1 (last bin closed)
    kh = hist[hist["scope"] == "kernel"].sort_values("bin")
    assert kh["count"].tolist() == [2, 1, 1, 2] and kh["fraction"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("scope", ["layer", "kernel"])
def test_regulariser_gradient_matches_finite_differences(scope):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    f = lambda x: differentiable_fuzziness(x, scope=scope)  # noqa: E731
    assert torch.autograd.gradcheck(f, (w,), eps=1e-6, atol=1e-8, rtol=1e-5)
    # the differentiable value is the reported fuzziness up to the clamp of the two ends
    exact = fuzziness(interval_position(w.detach(), scope)).item()
    assert f(w).item() == pytest.approx(exact, abs=1e-4)


def test_detached_bounds_gradient_is_that_of_fixed_bounds():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, 1, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    lo, hi = w.detach().min(), w.detach().max()

    def fixed(x):  # the fuzziness with the interval frozen at w's
        mu = ((x - lo) / (hi - lo)).clamp(1e-6, 1 - 1e-6)
        return -(mu * mu.log() + (1 - mu) * (1 - mu).log()).mean()

    assert torch.autograd.gradcheck(fixed, (w,), eps=1e-6, atol=1e-8)
    (g_det,) = torch.autograd.grad(differentiable_fuzziness(w, detach_bounds=True), w)
    (g_fix,) = torch.autograd.grad(fixed(w), w)
    (g_full,) = torch.autograd.grad(differentiable_fuzziness(w), w)
    assert torch.allclose(g_det, g_fix, atol=1e-12)
    assert not torch.allclose(g_det, g_full)  # the bounds' own gradient differs
    # interior weights above the centre are pushed up (descent direction -grad > 0)
    mu = interval_position(w.detach())
    inner = (mu > 0.6) & (mu < 1)
    assert (g_det[inner] < 0).all()


def test_regulariser_is_lambda_times_mean_of_layers():
    torch.manual_seed(0)
    net = get_model("lenet5").double()
    convs = select_layers(find_layers(net), ["conv*"])
    reg = FuzzinessRegularizer(convs, 0.7)
    per = [differentiable_fuzziness(net.get_submodule(l.path).weight) for l in convs]
    assert reg(net).item() == pytest.approx(0.7 * (per[0] + per[1]).item() / 2, rel=1e-12)
    assert FuzzinessRegularizer(convs, 0.0)(net).item() == 0.0
    with pytest.raises(ValueError, match="lambda"):
        FuzzinessRegularizer(convs, -1)
    with pytest.raises(ValueError, match="at least one layer"):
        FuzzinessRegularizer([], 1)


def test_first_epoch_steps():
    assert first_epoch_steps([0.05, 0.1, 0.25, 0.5], 20) == [1, 2, 5, 10]
    assert first_epoch_steps([0.01, 0.2, 0.99], 4) == [1]  # rounded to steps 0 -> 1, 1, 4 = end of epoch
    with pytest.raises(ValueError, match="fractions in"):
        first_epoch_steps([1.0], 10)


def _small(digits_shards, n_train=256):
    pre = Preprocess.from_dict(read_manifest(digits_shards)["preprocess"])
    return pre, load_split(digits_shards, "train", limit=n_train), load_split(digits_shards, "test", limit=128)


def test_tracker_records_every_epoch_and_the_first_epoch_points(digits_shards):
    pre, tr, te = _small(digits_shards)  # 256 images / 64 = 4 steps per epoch
    torch.manual_seed(0)
    net = get_model("lenet5")
    init = {k: v.clone() for k, v in net.state_dict().items()}
    layers = find_layers(net)
    tracker = WeightTracker(layers, 4, first_epoch_steps([0.25, 0.5], 4), bins=10, meta={"model": "m"})
    train_classifier(net, tr, te, pre, TrainConfig(epochs=3, seed=0), on_step=tracker.on_step,
                     on_epoch_end=tracker.on_epoch_end, progress=False)  # fmt: skip
    st, hist = tracker.stats(), tracker.histograms()
    assert sorted(st["epoch"].unique()) == [0, 0.25, 0.5, 1, 2, 3]
    assert sorted(st["step"].unique()) == [0, 1, 2, 4, 8, 12]
    per_snapshot = sum(1 + l.n_out for l in layers)  # one layer row + one row per kernel
    assert len(st) == 6 * per_snapshot and (st["model"] == "m").all()
    counts = hist.groupby(["epoch", "layer", "scope"])["count"].sum().unstack("scope")
    n_w = {l.path: math.prod(l.weight_shape) for l in layers}
    assert (counts["layer"] == counts.index.get_level_values("layer").map(n_w)).all()
    assert (counts["kernel"] == counts["layer"]).all()
    # the epoch-0 snapshot is the initialisation, the last one the trained network
    init_net = get_model("lenet5")
    init_net.load_state_dict(init)
    for snap, model in ((0, init_net), (3, net)):
        ref = weight_stats(model, layers)
        got = st[st["epoch"] == snap].reset_index(drop=True)
        assert np.allclose(got["fuzziness"], ref["fuzziness"]) and np.allclose(got["w_max"], ref["w_max"])


def test_regularised_training_lowers_conv_fuzziness(digits_shards):
    pre, tr, te = _small(digits_shards, 512)
    out = {}
    for lam in (0.0, 3.0):
        torch.manual_seed(0)
        net = get_model("lenet5")
        convs = select_layers(find_layers(net), ["conv*"])
        reg = FuzzinessRegularizer(convs, lam)
        train_classifier(net, tr, te, pre, TrainConfig(epochs=2, seed=0), regularizer=reg if lam else None, progress=False)
        out[lam] = reg.fuzziness(net).item()
    assert out[3.0] < out[0.0] - 0.02, out


def test_pixel_space_composes_to_the_preprocess():
    pre = Preprocess(scale=1 / 16, mean=(0.3,), std=(0.4,), size=32)
    u8 = torch.randint(0, 17, (3, 1, 8, 8), dtype=torch.uint8)
    to_pixels, normalise, box = pixel_space(pre)
    x = to_pixels(u8)
    assert box == (0.0, 1.0) and x.min() >= 0 and x.max() <= 1
    assert torch.equal(normalise(x), pre(u8))


def test_robust_accuracy_clean_at_eps_zero_lower_under_attack_and_seeded(lenet_checkpoint, digits_shards):
    from netperturb.models.checkpoints import load_checkpoint

    loaded = load_checkpoint(lenet_checkpoint)
    x, y = load_split(digits_shards, "test")
    clean = evaluate(loaded.model, x, y, loaded.preprocess).metrics()
    f = robust_accuracy(loaded.model, x, y, loaded.preprocess, attack="fgsm", eps_values=[0, 0.2], seed_key=(1, "a"))
    assert f[0]["top1"] == clean["top1"] and f[0]["loss"] == pytest.approx(clean["loss"], rel=1e-6)
    assert f[1]["top1"] < clean["top1"] - 0.1 and f[1]["loss"] > clean["loss"]
    p1 = robust_accuracy(loaded.model, x, y, loaded.preprocess, attack="pgd", eps_values=[0.1], seed_key=(1, "a"), pgd_steps=3)
    p2 = robust_accuracy(loaded.model, x, y, loaded.preprocess, attack="pgd", eps_values=[0.1], seed_key=(1, "a"), pgd_steps=3)
    assert p1 == p2 and p1[0]["steps"] == 3 and p1[0]["n_images"] == len(y)
    with pytest.raises(ValueError, match="attack"):
        robust_accuracy(loaded.model, x, y, loaded.preprocess, attack="cw", eps_values=[0.1], seed_key=(1, "a"))


def test_perturb_run_draws_are_shared_across_lambda(tmp_path, lenet_checkpoint, digits_shards):
    from netperturb.studies.shen2021.jobs import perturb_run

    from netperturb.core.context import RunContext

    ctx = RunContext(run="t", dataset="digits", shard_dir=str(digits_shards), model_file=str(lenet_checkpoint), study_seed=9,
                     progress=False)  # fmt: skip
    kw = dict(seed=4, layers=["conv1", "fc5"], repeats=2,
              perturbations={"synapse_knockout": {"levels": [0, 0.5]}, "gaussian_noise": {"levels": [0, 1.0], "include_bias": False}})  # fmt: skip
    a = perturb_run(ctx, tmp_path / "a.csv", lam=0.0, **kw)
    b = perturb_run(ctx, tmp_path / "b.csv", lam=1.0, **kw)
    assert len(a) == 1 + 2 * 2 * 2 * 2 and set(a["model"]) == {"lenet5_lam0_seed4"} and set(b["model"]) == {"lenet5_lam1_seed4"}
    assert (a["lam"] == 0).all() and (b["lam"] == 1).all() and (a["train_seed"] == 4).all()
    # same checkpoint, same draws: identical cells whatever lambda says
    cols = ["layer", "perturbation", "level", "repeat", "seed", "top1", "loss"]
    assert a[cols].equals(b[cols])
    clean = a[a["perturbation"] == "none"].iloc[0]
    zero = a[(a["level"] == 0) & (a["perturbation"] != "none")]
    assert (zero["top1"] == clean["top1"]).all() and len(zero) == 8
    assert pd.read_csv(tmp_path / "a.csv")["top1"].tolist() == a["top1"].tolist()


def test_train_run_lambda_zero_is_plain_training(tmp_path, digits_shards):
    from netperturb.models.checkpoints import load_checkpoint
    from netperturb.studies.shen2021.jobs import train_run
    from netperturb.models.train import train_model

    train_model(digits_shards, "lenet5", {"epochs": 1, "seed": 3}, tmp_path / "p.pt", tmp_path / "p.csv",
                model_name="p", study="t")  # fmt: skip
    outs = {k: tmp_path / f"{k}.csv" for k in ("history", "tracking", "histograms")}
    from netperturb.core.context import RunContext

    hist = train_run(
        RunContext(run="t", dataset="digits", shard_dir=str(digits_shards), progress=False),
        checkpoint_out=tmp_path / "m.pt", history_out=outs["history"], tracking_out=outs["tracking"],
        histograms_out=outs["histograms"], arch="lenet5", lam=0.0, seed=3,
        train_cfg={"epochs": 1, "seed": 99}, first_epoch_points=[0.5], bins=5,
    )  # fmt: skip
    plain, ours = load_checkpoint(tmp_path / "p.pt"), load_checkpoint(tmp_path / "m.pt")
    assert all(torch.equal(v, ours.model.state_dict()[k]) for k, v in plain.model.state_dict().items())
    assert ours.meta["lam"] == 0.0 and ours.meta["train_seed"] == 3 and ours.meta["regularizer"]["layers"] == ["features.0", "features.3"]
    assert list(hist["epoch"]) == [0, 1] and hist["reg_fuzziness"].notna().all() and (hist["model"] == "lenet5_lam0_seed3").all()
    track = pd.read_csv(outs["tracking"])
    assert sorted(track["epoch"].unique()) == [0, 0.5, 1] and set(track["lam"]) == {0.0}
    assert len(pd.read_csv(outs["histograms"])) == 3 * 5 * 2 * 5  # snapshots x layers x scopes x bins


@pytest.fixture
def minmax_config():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    from snakemake.utils import validate

    validate(cfg, str(REPO / "config" / "schema.yaml"))  # fills the defaults
    return cfg


def test_check_config_names_the_key(minmax_config):
    from netperturb.studies.shen2021.plan import check_config

    plan = check_config(minmax_config["shen2021"], num_classes=10, in_channels=1)
    from netperturb.core.seeds import canonical_level

    assert plan["lams"] == [canonical_level(v) for v in minmax_config["shen2021"]["lambdas"]]
    assert canonical_level(1.0) == "1" and canonical_level(0.30000000000000004) == "0.3"
    for edit, key in [
        (lambda m: m["regularizer"].update(layers=["conv9"]), "shen2021.regularizer.layers"),
        (lambda m: m["attacks"].update(report_eps=0.33), "shen2021.attacks.report_eps"),
        (lambda m: m.update(lambdas=[0.1, 0.10000000000001]), "shen2021.lambdas"),
        (lambda m: m.update(arch="lenet6"), "shen2021.arch"),
    ]:
        mm = copy.deepcopy(minmax_config["shen2021"])
        edit(mm)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            check_config(mm, num_classes=10, in_channels=1)
    bad = copy.deepcopy(minmax_config)
    bad["shen2021"]["regularizer"]["scope"] = "filter"
    bad["shen2021"]["first_epoch_points"] = [1.5]
    errors = config_errors(bad, REPO / "config" / "schema.yaml")
    assert any(e.startswith("shen2021.regularizer.scope: 'filter' is not one of") for e in errors), errors
    assert any(e.startswith("shen2021.first_epoch_points[0]: 1.5 is greater than or equal to the maximum") for e in errors), errors


def test_summaries_by_hand():
    from netperturb.studies.shen2021.figures import fuzziness_change, perturbation_auc, robust_summary

    rows = []
    for lam, seed, f0, f1 in [(0, 0, 0.5, 0.4), (0, 1, 0.5, 0.6), (1, 0, 0.5, 0.2), (1, 1, 0.5, 0.3)]:
        for epoch, f in ((0, f0), (0.5, 0.45), (2, f1)):
            rows.append({"lam": lam, "train_seed": seed, "layer": "features.0", "layer_label": "conv1", "layer_index": 1,
                         "epoch": epoch, "step": int(epoch * 4), "scope": "layer", "kernel": -1, "fuzziness": f,
                         "frac_ends": 0.1, "frac_low": 0.05, "frac_high": 0.05})  # fmt: skip
    ch = fuzziness_change(pd.DataFrame(rows)).set_index("lam")
    assert ch.loc[0, "Fend_mean"] == pytest.approx(0.5) and ch.loc[0, "n_fell"] == 1 and ch.loc[1, "n_fell"] == 2
    assert ch.loc[1, "delta_mean"] == pytest.approx(-0.25) and ch.loc[1, "delta_sd"] == pytest.approx(math.sqrt(0.005))
    rob = pd.DataFrame([{"attack": "fgsm", "eps": e, "lam": lam, "train_seed": s, "top1": v}
                        for lam, s, v in [(0, 0, 0.3), (0, 1, 0.5), (1, 0, 0.4), (1, 1, 0.5)]
                        for e in (0.0, 0.1)])  # fmt: skip
    rs = robust_summary(rob, 0.1).set_index("lam")
    assert rs.loc[1, "mean"] == pytest.approx(0.45) and rs.loc[1, "diff_mean"] == pytest.approx(0.05)
    assert rs.loc[1, "n_higher"] == 1 and rs.loc[0, "diff_mean"] == 0
    pert = pd.DataFrame([{"perturbation": "p", "layer_index": 1, "layer_label": "conv1", "lam": lam, "train_seed": 0,
                          "level": lv, "repeat": r, "top1": acc}
                         for lam, accs in ((0.0, (0.9, 0.5, 0.3)), (1.0, (0.9, 0.7, 0.5)))
                         for lv, acc in zip((0, 0.5, 1), accs) for r in (0, 1)])  # fmt: skip
    auc = perturbation_auc(pert).set_index("lam")
    assert auc.loc[0.0, "mean"] == pytest.approx(0.4) and auc.loc[1.0, "diff_mean"] == pytest.approx(0.2)


def test_fuzziness_robustness_correlation_by_hand():
    from scipy.stats import pearsonr

    from netperturb.studies.shen2021.figures import fuzziness_robustness, spearman

    fz = [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    acc = [0.1, 0.3, 0.2, 0.5, 0.4, 0.6]
    hist = pd.DataFrame([{"model": f"m{i}", "lam": float(i // 3), "train_seed": i % 3, "epoch": e, "reg_fuzziness": f if e else 0.5}
                         for i, f in enumerate(fz) for e in (0, 2)])  # fmt: skip
    rob = pd.DataFrame([{"model": f"m{i}", "attack": "pgd", "eps": e, "top1": a if e else 0.9}
                        for i, a in enumerate(acc) for e in (0.0, 0.1)])  # fmt: skip
    pts, corr = fuzziness_robustness(hist, rob, 0.1)
    assert pts.sort_values("model")["fuzziness"].tolist() == fz  # the last epoch's value
    row = corr[corr["subset"] == "all runs"].iloc[0]
    r, p = pearsonr(fz, acc)
    assert row["n"] == 6 and row["pearson_r"] == pytest.approx(r) and row["pearson_p"] == pytest.approx(p)
    # ranks fz (6, 5, 4, 3, 2, 1), acc (1, 3, 2, 5, 4, 6): d = (5, 2, 2, -2, -2, -5), sum d^2 = 66,
    # rho = 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 396 / 210
    assert row["spearman_rho"] == pytest.approx(1 - 6 * 66 / (6 * 35))
    assert set(corr["subset"]) == {"all runs", "lam=0", "lam=1"}
    # exact permutation p for 3 points with a perfect rank correlation: 2 of 3! pairings
    assert spearman([1, 2, 3], [6, 5, 4]) == (-1.0, pytest.approx(1 / 3))
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3])[0])
