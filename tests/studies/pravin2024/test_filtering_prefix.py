"""Clean-prefix reuse in the filter sweeps (netperturb.studies.pravin2024.prefix.PrefixReuse): the same counts
as the whole network per point, for every attack mode, on a ResNet (skip tensors, a shortcut
conv whose output the block updates in place) and on a conv-BN net; kept values stay intact;
memory budget; fallback; one job sweeping several layers equals one job per layer."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch
from torch import nn

import netperturb.studies.pravin2024.evaluator as evaluator
import netperturb.studies.pravin2024.prefix as prefix
from netperturb.studies.pravin2024.evaluator import AttackSpec, Evaluator
from netperturb.studies.pravin2024.prefix import PrefixReuse
from netperturb.studies.pravin2024.sweeps import layer_sweep
from netperturb.perturb.filters import HighPassFilter
from netperturb.core.layers import find_layers, select_layers
from netperturb.models import get_model

from conftest import randomise_bn

SPECS = {
    "fgsm": AttackSpec(eps=0.1),
    "fgsm-clamp": AttackSpec(eps=0.1, clamp=True),
    "fgsm-eps0": AttackSpec(eps=0.0),
    "pgd": AttackSpec(name="pgd", eps=0.1, steps=2),
    "reuse": AttackSpec(eps=0.1, mode="reuse"),
}
# stem (with its BN), a residual-branch conv, the shortcut conv (its output is added to in
# place by the block), a conv whose input is also the block's skip tensor, the classifier
RESNET_LAYERS = ["conv1", "layer1.0.conv1", "layer2.0.downsample.0", "layer2.1.conv1", "fc"]


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    net = randomise_bn(get_model("resnet18", num_classes=10, in_channels=1), seed=1).eval().requires_grad_(False)
    torch.manual_seed(2)
    x = torch.rand(24, 1, 16, 16) * 2 - 1
    y = torch.arange(24) % 10
    return net, x, y


def _rows(ev_args, layer, reuse_prefix, steps=4):
    ev = Evaluator(*ev_args[:3], ev_args[3], box=(-1.0, 1.0), study_seed=5, model_key="m/init0/epoch1", batch_size=10)
    return layer_sweep(ev, layer, ["low", "high", "pulse"], steps, progress=False, reuse_prefix=reuse_prefix)


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert {k: ra[k] for k in ra if k not in ("top1", "top5", "loss")} == {k: rb[k] for k in rb if k not in ("top1", "top5", "loss")}
        assert (ra["top1"], ra["top5"]) == (rb["top1"], rb["top5"]), (ra, rb)
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6, abs=1e-9), (ra, rb)


@pytest.mark.parametrize("spec", list(SPECS))
def test_resnet_sweeps_equal_the_whole_network_path(resnet, spec):
    net, x, y = resnet
    layers = select_layers(find_layers(net), RESNET_LAYERS)
    assert len(layers) == len(RESNET_LAYERS)
    for layer in layers:
        _same(_rows((net, x, y, SPECS[spec]), layer, False, steps=3), _rows((net, x, y, SPECS[spec]), layer, True, steps=3))


@pytest.mark.parametrize("spec", ["fgsm", "pgd", "reuse"])
def test_convbn_sweeps_equal_the_whole_network_path(convbn, spec):
    torch.manual_seed(3)
    x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 10
    for layer in find_layers(convbn):
        _same(_rows((convbn, x, y, SPECS[spec]), layer, False), _rows((convbn, x, y, SPECS[spec]), layer, True))


def test_counts_equal_the_generic_path_and_kept_values_stay_intact(resnet):
    net, x, y = resnet
    (layer,) = select_layers(find_layers(net), ["layer2.0.downsample.0"])
    ev = Evaluator(net, x, y, SPECS["fgsm"], batch_size=10)
    path = PrefixReuse(ev, layer)
    w = net.get_submodule(layer.path).weight
    new = HighPassFilter()({"weight": w}, float(w.median()))["weight"]
    a = path.counts(new, seed=0)
    kept = [[t.detach().clone() for t in live] for _, live, _ in path._kept]
    assert path.kept_batches == 3  # 24 images in batches of 10
    b = path.counts(new, seed=0)  # the block's in-place `out += identity` ran on copies
    assert [t for live in kept for t in live] and all(
        torch.equal(k, t) for live_k, (_, live, _) in zip(kept, path._kept) for k, t in zip(live_k, live)
    )
    ref = evaluator.clean_and_adversarial(net, x, y, SPECS["fgsm"], overrides={f"{layer.path}.weight": new}, batch_size=10)
    for got in (a, b):
        for c, r in zip(got, ref):
            assert (c.n, c.top1, c.top5) == (r.n, r.top1, r.top5) and c.loss_sum == pytest.approx(r.loss_sum, rel=1e-6)
    # the clean network through the split equals the model
    clean = path.counts(w, seed=0)[0]
    assert clean.top1 == evaluator.clean_and_adversarial(net, x, y, SPECS["fgsm"], batch_size=10)[0].top1


def test_no_memory_to_keep_the_prefix_gives_the_same_counts(resnet, monkeypatch):
    net, x, y = resnet
    (layer,) = select_layers(find_layers(net), ["layer1.1.conv2"])
    full = _rows((net, x, y, SPECS["fgsm"]), layer, True)
    monkeypatch.setattr(prefix, "available_memory", lambda device: 1000)
    ev = Evaluator(net, x, y, SPECS["fgsm"], batch_size=10)
    assert PrefixReuse(ev, layer)._budget == 500
    _same(_rows((net, x, y, SPECS["fgsm"]), layer, True), full)
    path = PrefixReuse(ev, layer)
    path.counts(net.get_submodule(layer.path).weight, seed=0)
    assert path.kept_batches == 0


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        h = self.conv(x)
        if h.sum() > 0:
            h = h.relu()
        return self.fc(h.flatten(1))


def test_untraceable_model_falls_back_to_the_whole_network(caplog):
    torch.manual_seed(0)
    net = Untraceable().eval().requires_grad_(False)
    x, y = torch.rand(12, 1, 8, 8), torch.arange(12) % 10
    layer = find_layers(net)[0]
    with caplog.at_level(logging.WARNING, logger="netperturb"):
        rows = _rows((net, x, y, SPECS["fgsm"]), layer, True)
    assert "no clean-prefix reuse" in caplog.text
    _same(rows, _rows((net, x, y, SPECS["fgsm"]), layer, False))


@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_one_job_for_several_layers_equals_one_job_per_layer(lenet_checkpoint, digits_shards, tmp_path, reuse_prefix):
    from netperturb.studies.pravin2024.jobs import sweep_layers

    kw = dict(init=0, epoch=1, filters=["low", "pulse"], steps=3, attack=AttackSpec(eps=0.1), n_images=30,
              reuse_prefix=reuse_prefix)  # fmt: skip
    ctx = _ctx(lenet_checkpoint, digits_shards)
    both = sweep_layers(ctx, tmp_path / "both.csv", layers=["conv1", "fc5"], **kw)
    assert list(both["layer_label"].unique()) == ["conv1", "fc5"] and len(both) == 2 * 2 * 3 * 2
    for label in ("conv1", "fc5"):
        one = sweep_layers(ctx, tmp_path / f"{label}.csv", layers=[label], **kw)
        pd.testing.assert_frame_equal(both[both["layer_label"] == label].reset_index(drop=True), one)
    with pytest.raises(ValueError, match="no layers"):
        sweep_layers(ctx, tmp_path / "none.csv", layers=[], **kw)


def _ctx(checkpoint, shards):
    """The run context these sweeps share (model m, digits, study seed 7, batches of 16)."""
    from netperturb.core.context import RunContext

    return RunContext(run="s", dataset="digits", shard_dir=str(shards), model="m", model_file=str(checkpoint),
                      study_seed=7, batch_size=16, device="cpu", progress=False)  # fmt: skip
