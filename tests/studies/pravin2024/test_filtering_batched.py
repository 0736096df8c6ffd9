"""Batched filter sweeps (issue 16, point 2; netperturb.studies.pravin2024.batched.BatchedSweep):
K sweep points of a layer as K replicas in one call give exactly (==, not approximately) the
rows of the one-point-at-a-time path, for every filter and attack mode, on a ResNet, a conv-BN
net and LeNet-5, with K dividing the number of points or not; identical zero sets are
evaluated once; cell-level resume writes the uninterrupted CSV."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch
from torch import nn

import netperturb.studies.pravin2024.batched as batched
from netperturb.core.layers import find_layers, select_layers
from netperturb.core.resume import partial_path
from netperturb.models import get_model
from netperturb.perturb.engine.graph import split_at_layer, widen_roles
from netperturb.perturb.filters import HighPassFilter, LowPassFilter
from netperturb.studies.pravin2024.batched import BatchedSweep
from netperturb.studies.pravin2024.evaluator import AttackSpec, Evaluator
from netperturb.studies.pravin2024.prefix import PrefixReuse
from netperturb.studies.pravin2024.sweeps import layer_sweep

from conftest import randomise_bn
from resume_kill import Killed, kill_after, reuse_message, stored_cells

SPECS = {
    "fgsm": AttackSpec(eps=0.1),
    "fgsm-clamp": AttackSpec(eps=0.1, clamp=True),
    "fgsm-eps0": AttackSpec(eps=0.0),
    "reuse": AttackSpec(eps=0.1, mode="reuse"),
    "pgd-reuse": AttackSpec(name="pgd", eps=0.1, steps=2, mode="reuse"),
    "pgd": AttackSpec(name="pgd", eps=0.1, steps=2),  # regenerate: one point at a time
}
RESNET_LAYERS = ["conv1", "layer1.0.conv1", "layer2.0.downsample.0", "layer2.1.conv1", "fc"]


@pytest.fixture(autouse=True)
def one_thread():
    """Exact equality holds on one CPU thread (the sweep jobs' setting): with more, a kernel may
    split its work by batch size and round differently (seen at 2 threads on the conv-BN net)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    net = randomise_bn(get_model("resnet18", num_classes=10, in_channels=1), seed=1).eval().requires_grad_(False)
    torch.manual_seed(2)
    return net, torch.rand(24, 1, 16, 16) * 2 - 1, torch.arange(24) % 10


def _rows(net, x, y, spec, layer, k, steps=4, **kw):
    ev = Evaluator(net, x, y, spec, box=(-1.0, 1.0), study_seed=5, model_key="m/init0/epoch1", batch_size=10)
    return layer_sweep(ev, layer, ["low", "high", "pulse"], steps, progress=False, max_replicas=k, **kw)


@pytest.mark.parametrize(
    "spec, channels_last", [(s, False) for s in SPECS] + [("fgsm", True), ("reuse", True)]
)  # fmt: skip
def test_resnet_batched_rows_equal_one_point_at_a_time(resnet, spec, channels_last):
    net, x, y = resnet
    if channels_last:  # 1 input channel: the memory format of repeated inputs must be kept exactly
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        # 12 points, of which some share a zero set: K = 5 divides neither; K = 4 leaves a short
        # chunk too. Both for the two main modes; K = 5 alone for the variants (attack options,
        # memory format) and for PGD regenerated, whose points run one at a time whatever K is
        ks = (5, 4) if spec in ("fgsm", "reuse") and not channels_last else (5,)
        for layer in select_layers(find_layers(net), RESNET_LAYERS):
            one = _rows(net, x, y, SPECS[spec], layer, 1)
            assert len(one) == 2 * 3 * 4
            for k in ks:
                assert _rows(net, x, y, SPECS[spec], layer, k) == one, (layer.path, k)
    finally:
        net.to(memory_format=torch.contiguous_format)


@pytest.mark.parametrize("spec", ["fgsm", "reuse", "pgd"])
def test_convbn_and_lenet_batched_rows_equal_one_point_at_a_time(convbn, spec):
    torch.manual_seed(3)
    x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 10
    for layer in find_layers(convbn):
        assert _rows(convbn, x, y, SPECS[spec], layer, 3, steps=5) == _rows(convbn, x, y, SPECS[spec], layer, 1, steps=5)
    torch.manual_seed(4)
    lenet = get_model("lenet5", num_classes=10, in_channels=1).eval().requires_grad_(False)
    x = torch.rand(20, 1, 32, 32)
    for layer in find_layers(lenet):
        assert _rows(lenet, x, y, SPECS[spec], layer, 7, steps=5) == _rows(lenet, x, y, SPECS[spec], layer, 1, steps=5)


def test_batched_counts_equal_prefix_reuse_per_weight_and_the_short_chunk(resnet):
    net, x, y = resnet
    (layer,) = select_layers(find_layers(net), ["layer2.1.conv1"])
    w = net.get_submodule(layer.path).weight
    qs = torch.quantile(w.flatten(), torch.tensor([0.2, 0.5, 0.8])).tolist()
    weights = [w] + [HighPassFilter()({"weight": w}, q)["weight"] for q in qs] + [LowPassFilter()({"weight": w}, qs[1])["weight"]]
    ev = Evaluator(net, x, y, SPECS["fgsm-clamp"], box=(-1.0, 1.0), batch_size=10)
    sweep = BatchedSweep(ev, layer, max_replicas=3, n_points=len(weights))
    assert sweep.k == 3
    got = sweep.counts(weights[:3]) + sweep.counts(weights[3:])  # the second chunk has 2 < K replicas
    assert sweep.kept_batches == 3  # 24 images in batches of 10, each kept K-fold with its graph
    ref = PrefixReuse(ev, layer)
    for wt, (c, a) in zip(weights, got):
        rc, ra = ref.counts(wt, seed=0)
        assert (c.n, c.top1, c.top5, c.loss_sum) == (rc.n, rc.top1, rc.top5, rc.loss_sum)
        assert (a.n, a.top1, a.top5, a.loss_sum) == (ra.n, ra.top1, ra.top5, ra.loss_sum)
    assert got[0] != got[2]  # the points differ: each replica got its own filtered layer
    with pytest.raises(ValueError, match="expected 1..3"):
        sweep.counts(weights[:4])
    with pytest.raises(ValueError, match="one point at a time"):
        BatchedSweep(Evaluator(net, x, y, SPECS["pgd"]), layer, 4, 4)


def test_identical_zero_sets_are_evaluated_once(resnet, monkeypatch):
    net, x, y = resnet
    (layer,) = select_layers(find_layers(net), ["fc"])
    computed = []
    counts = BatchedSweep.counts
    monkeypatch.setattr(BatchedSweep, "counts", lambda self, ws: computed.append(len(ws)) or counts(self, ws))
    rows = _rows(net, x, y, SPECS["fgsm"], layer, 5, steps=4)
    w = net.get_submodule("fc").weight.double()
    keys = set()
    for kind in ("low", "high", "pulse"):
        from netperturb.perturb.filters import alpha_grid, make_filter, weight_range

        lo, hi = weight_range(net.get_submodule("fc").weight)
        flt = make_filter(kind, lo=lo, hi=hi, steps=4)
        keys |= {flt.mask(w, a).numpy().tobytes() for a in alpha_grid(kind, lo, hi, 4)[0]}
    assert len(rows) == 24 and len(keys) < 12  # the sweeps share zero sets (empty, full)
    assert sum(computed) == len(keys) and computed == [5] * (len(keys) // 5) + ([len(keys) % 5] if len(keys) % 5 else [])


def test_no_memory_gives_one_replica_and_the_same_rows(resnet, monkeypatch):
    net, x, y = resnet
    (layer,) = select_layers(find_layers(net), ["layer1.1.conv2"])
    full = _rows(net, x, y, SPECS["fgsm"], layer, 8)
    monkeypatch.setattr(batched, "available_memory", lambda device: 1000)
    ev = Evaluator(net, x, y, SPECS["fgsm"], batch_size=10)
    sweep = BatchedSweep(ev, layer, 8, 12)
    assert sweep.k == 1
    sweep.counts([net.get_submodule(layer.path).weight])
    assert sweep.kept_batches == 0
    assert _rows(net, x, y, SPECS["fgsm"], layer, 8) == full


def test_unit_each_equals_each_replica_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.BatchNorm2d(6), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    net = randomise_bn(net).eval().requires_grad_(False)
    for path, bn, shape in (("0", "1", (3 * 2, 4, 6, 6)), ("3", None, (3 * 2, 96))):
        sp = split_at_layer(net, path, torch.rand(2, 4, 6, 6), bn=bn)
        clean = sp.clean_tensors()
        reps = [{**clean, "weight": clean["weight"] * (r + 1)} for r in range(3)]
        x = torch.randn(shape)
        got = sp.unit_each(x, reps)
        for r, rep in enumerate(reps):
            assert torch.equal(got[2 * r : 2 * r + 2], sp.unit(x[2 * r : 2 * r + 2], widen_roles([rep], sp), 1))


@pytest.mark.parametrize("k", [2, 1])
def test_batched_resume_writes_the_per_point_csv(lenet_checkpoint, digits_shards, tmp_path, monkeypatch, caplog, k):
    from netperturb.studies.pravin2024.jobs import sweep_layers

    kw = dict(init=0, epoch=1, filters=["low", "pulse"], steps=3, attack=AttackSpec(eps=0.1), n_images=30,
              layers=["conv1", "fc5"])  # fmt: skip
    ctx = _ctx(lenet_checkpoint, digits_shards)
    ref = tmp_path / "ref.csv"
    sweep_layers(ctx, ref, max_replicas=1, **kw)
    out = tmp_path / "out.csv"
    with monkeypatch.context() as m:
        kill_after(m, 5)  # in the middle of conv1's second chunk of K = 3 points
        with pytest.raises(Killed):
            sweep_layers(ctx, out, max_replicas=3, **kw)
    stored = stored_cells(partial_path(out))
    assert stored == 5
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="netperturb"):
        sweep_layers(ctx, out, max_replicas=k, **kw)
    assert out.read_bytes() == ref.read_bytes()
    assert reuse_message(caplog).endswith(f"{stored} cells reused from an interrupted run, {12 - stored} computed")
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(ref))


def _ctx(checkpoint, shards):
    """The run context these sweeps share (model m, digits, study seed 7, batches of 16)."""
    from netperturb.core.context import RunContext

    return RunContext(run="s", dataset="digits", shard_dir=str(shards), model="m", model_file=str(checkpoint),
                      study_seed=7, batch_size=16, device="cpu", progress=False)  # fmt: skip
