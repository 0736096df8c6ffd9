"""The fast engine computes exactly what the naive reference computes, on any graph shape.

The models run on ``NETPERTURB_TEST_DEVICE`` (default cpu; bench/gpu.sh sets cuda).
"""

import functools

import pytest
import torch
from conftest import engine_test_device, randomise_bn
from torch import nn

from netperturb.models.loaded import LoadedModel
from netperturb.models.checkpoints import load_checkpoint
from netperturb.core.preprocess import Preprocess
from netperturb.datasets.shards import load_split
from netperturb.perturb.engine.runners import FastPlan, run_cells, run_fast
from netperturb.perturb.engine.replicas import ReplicaBuilder, choose_replicas
from netperturb.perturb.engine.graph import macs_per_image, split_at_layer, widen
from netperturb.perturb.grid import LayerJob, layer_params, run_layer_job
from netperturb.core.layers import find_layers
from netperturb.models import get_model
from netperturb.perturb.noise import GaussianNoise
from netperturb.perturb.knockouts import NodeKnockout, SynapseKnockout
from netperturb.perturb.base import Perturbation
from netperturb.perturb.registry import make_perturbation
from netperturb.core.seeds import cell_generator

IMAGENET = Preprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), size=None)
N_IMAGES = 8
DEVICE = engine_test_device()  # the models' device; images and labels stay on the CPU

# per architecture: input size, and layers that cover the graph shapes (a middle conv, a
# conv followed by BN, a skip-connection branch, an inception branch, the last dense layer)
SIZE = {"alexnet": 64, "resnet18": 32, "googlenet": 32}
CASES = {
    "alexnet": ["features.6", "classifier.6"],
    "resnet18": ["layer1.0.conv1", "layer2.0.downsample.0"],
    "googlenet": ["inception4e.branch3.1.conv", "fc"],
}
LEVELS = {"synapse_knockout": [0.0, 0.3, 1.0], "node_knockout": [0.0, 0.5, 1.0], "gaussian_noise": [0.0, 0.5, 2.0]}


@functools.lru_cache(maxsize=None)
def make_loaded(arch: str) -> LoadedModel:
    """A random-init model (shared between tests: the engines never modify it, which
    test_engines_on_a_trained_network... checks)."""
    torch.manual_seed(0)
    model = randomise_bn(get_model(arch, num_classes=10, in_channels=3)).eval().requires_grad_(False).to(DEVICE)
    return LoadedModel(model=model, preprocess=IMAGENET, arch=arch, weights="random", meta={})


def make_data(loaded: LoadedModel, size: int = 64):
    """Random images; labels are the clean network's own top-1 for most images, so that
    accuracy starts high and every perturbation moves it (a sensitive comparison)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (N_IMAGES, 3, size, size), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        y = loaded.model(IMAGENET(x.to(DEVICE))).argmax(1).cpu()
    y[::3] = torch.randint(0, 10, (len(y[::3]),), generator=g)
    return x, y


@pytest.fixture(scope="module", params=list(CASES))
def model_case(request):
    loaded = make_loaded(request.param)
    return request.param, loaded, *make_data(loaded, SIZE[request.param])


def job(loaded, arch, path, name, levels, repeats=2, **opts):
    layer = {l.path: l for l in find_layers(loaded.model)}[path]
    return LayerJob(study="t", dataset="random", model=arch, layer=layer, perturbation=make_perturbation(name, **opts),
                    levels=levels, repeats=repeats, study_seed=5)  # fmt: skip


def assert_same(a, b, loss_rel=1e-5):
    assert a["seed"].tolist() == b["seed"].tolist()
    assert a["top1"].tolist() == b["top1"].tolist()
    assert a["top5"].tolist() == b["top5"].tolist()
    assert a["loss"].to_numpy() == pytest.approx(b["loss"].to_numpy(), rel=loss_rel)


def test_prefix_and_suffix_equal_the_full_forward_pass(model_case):
    arch, loaded, x, _ = model_case
    inp = IMAGENET(x[:4].to(DEVICE))
    with torch.no_grad():
        ref = loaded.model(inp)
        layers = find_layers(loaded.model)
        for layer in layers:
            if layer.path not in CASES[arch] and layer.index not in (1, len(layers)) and layer.index % 7:
                continue
            split = split_at_layer(loaded.model, layer, inp[:2])
            assert torch.equal(split.forward(inp), ref), layer.path


@pytest.mark.parametrize("name", list(LEVELS))
def test_engine_equals_naive_reference(model_case, name):
    arch, loaded, x, y = model_case
    for path in CASES[arch]:
        j = job(loaded, arch, path, name, LEVELS[name], repeats=1)
        naive = run_layer_job(j, loaded, x, y, batch_size=5, progress=False, engine="naive")
        fast = run_layer_job(j, loaded, x, y, batch_size=5, progress=False, engine="fast", max_replicas=3)
        assert_same(naive, fast)
        # the perturbations really change the network (the comparison is not vacuous)
        assert naive["loss"].nunique() == 3, (path, naive["loss"].tolist())


def test_skip_and_branch_values_are_live_across_the_layer():
    loaded = make_loaded("resnet18")
    x = IMAGENET(make_data(loaded, 64)[0][:2].to(DEVICE))
    split = split_at_layer(loaded.model, {l.path: l for l in find_layers(loaded.model)}["layer2.0.downsample.0"], x)
    # the downsample branch adds back into the main branch: the main branch's output is live,
    # and the BatchNorm that follows the layer is computed inside the replicated unit
    assert split.bn is loaded.model.layer2[0].downsample[1]
    assert len(split.suffix_live) == 1
    live = split.prefix(x)
    assert live[split.suffix_live[0]].shape == (2, 128, 8, 8)


def test_replica_batching_gives_the_same_numbers_as_one_replica_at_a_time():
    loaded = make_loaded("resnet18")
    x, y = make_data(loaded, 32)
    for path, name in [("layer1.0.conv1", "node_knockout"), ("layer3.0.downsample.0", "gaussian_noise")]:
        j = job(loaded, "resnet18", path, name, LEVELS[name], repeats=2)
        plans = [FastPlan(), FastPlan()]
        one = run_fast(j, loaded.model, x, y, IMAGENET, batch_size=6, max_replicas=1, progress=False, plan=plans[0])
        many = run_fast(j, loaded.model, x, y, IMAGENET, batch_size=6, max_replicas=4, progress=False, plan=plans[1])
        # node knockout at level 1 knocks everything out whatever the seed: its repeats are one cell
        dedup = 1 if name == "node_knockout" and 1.0 in LEVELS[name] else 0
        assert [p.deduplicated for p in plans] == [dedup, dedup]
        assert [p.replicas for p in plans] == [1, min(4, len(LEVELS[name][1:]) * 2 - dedup)]
        assert [p.reuse_clean_unit for p in plans] == [name == "node_knockout"] * 2
        assert [(c.n, c.top1, c.top5) for c in one] == [(c.n, c.top1, c.top5) for c in many]
        assert [c.loss_sum for c in one] == pytest.approx([c.loss_sum for c in many], rel=1e-6)


class Tricky(nn.Module):
    """A depthwise (grouped) conv followed by BN, and a module called twice."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.shared = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + torch.relu(self.bn(self.dw(x)))
        x = self.shared(torch.relu(self.shared(x)))
        return self.head(x.mean((2, 3)))


def tricky_loaded():
    torch.manual_seed(0)
    return LoadedModel(randomise_bn(Tricky()).eval().requires_grad_(False).to(DEVICE), IMAGENET, "tricky", "random", {})


def test_grouped_conv_with_batchnorm_and_a_layer_called_twice():
    loaded = tricky_loaded()
    x, y = make_data(loaded, size=12)
    for path in ("dw", "shared"):
        for name in LEVELS:
            j = job(loaded, "tricky", path, name, LEVELS[name])
            plan = FastPlan()
            counts = run_fast(j, loaded.model, x, y, IMAGENET, batch_size=4, max_replicas=4, progress=False, plan=plan)
            fast = run_layer_job(j, loaded, x, y, batch_size=4, progress=False, engine="fast", max_replicas=4)
            naive = run_layer_job(j, loaded, x, y, batch_size=4, progress=False, engine="naive")
            assert_same(naive, fast)
            assert [c.top1 / c.n for c in counts] == fast["top1"].tolist()
            if path == "shared":  # cannot be split: the module is called twice -> functional
                assert plan.fallback and "called 2 times" in plan.fallback
            else:
                assert plan.fallback is None and plan.replicas == 4 - plan.deduplicated
                assert plan.deduplicated == (name != "gaussian_noise") and plan.reuse_clean_unit == (name == "node_knockout")


def test_widen_keeps_each_replica_in_its_group():
    # grouped conv: replica r's filters of group g must read the input channels of group g
    w = [torch.randn(8, 2, 3, 3) for _ in range(3)]
    x = torch.randn(2, 8, 5, 5)
    y = nn.functional.conv2d(x, widen(w, groups=4), groups=4)  # (2, 24, 3, 3): (group, replica, channel)
    y = y.reshape(2, 4, 3, 2, 3, 3)
    for r in range(3):
        ref = nn.functional.conv2d(x, w[r], groups=4).reshape(2, 4, 2, 3, 3)
        torch.testing.assert_close(y[:, :, r], ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "perturbation", [SynapseKnockout(), SynapseKnockout(include_bias=False), NodeKnockout(), NodeKnockout(bn_aware=False),
                     GaussianNoise(), GaussianNoise(include_bias=False)],  # fmt: skip
    ids=repr,
)
def test_replica_tensors_equal_the_reference_perturbation_bit_for_bit(convbn, perturbation):
    convbn = convbn.to(DEVICE)
    layer = find_layers(convbn)[0]  # conv with bias, followed by BN
    params = layer_params(convbn, layer)
    assert set(params) == {"weight", "bias", "bn_weight", "bn_bias"}
    builder = ReplicaBuilder(perturbation, params)
    # the fast path, not the generic one: masks / rows / deltas, not whole new tensors
    assert all(c.op in ("mask", "rows", "add") for c in builder.draw(0.5, 1).values())
    cells = [(level, seed) for level in (0.0, 0.25, 0.5, 1.0) for seed in (1, 2)]
    refs = []
    for level, seed in cells:
        ref = perturbation(params, level, cell_generator(seed))
        got = builder.cell(level, seed)
        assert sorted(got) == sorted(ref)
        for role in ref:
            assert torch.equal(got[role], ref[role]), (role, level)
        refs.append({role: ref.get(role, t) for role, t in params.items()})
    # the replicas written straight into the wide buffers, twice (buffers are reused)
    for group in (cells, cells[3:6]):
        wide = builder.build([builder.draw(level, seed) for level, seed in group])
        sel = refs if group is cells else refs[3:6]
        for role in params:
            assert torch.equal(wide[role], torch.cat([r[role] for r in sel])), role


class SignFlip(Perturbation):
    """A perturbation the engine does not know: flip the sign of a random fraction of weights."""

    name = "sign_flip"
    max_level = 1.0

    def _apply(self, params, level, generator):
        w = params["weight"]
        mask = torch.rand(w.shape, generator=generator) < level
        return {"weight": torch.where(mask.to(w.device), -w, w)}


def test_unknown_perturbations_run_through_the_generic_path():
    loaded = make_loaded("alexnet")
    x, y = make_data(loaded)
    layer = find_layers(loaded.model)[3]
    j = LayerJob(study="t", dataset="r", model="alexnet", layer=layer, perturbation=SignFlip(), levels=[0.0, 0.5, 1.0],
                 repeats=2, study_seed=3)  # fmt: skip
    # the generic path: the perturbation's own tensors ("set"), drawn without the engine knowing it
    assert {c.op for c in ReplicaBuilder(j.perturbation, layer_params(loaded.model, layer)).draw(0.5, 1).values()} == {"set"}
    assert_same(
        run_layer_job(j, loaded, x, y, batch_size=5, progress=False, engine="naive"),
        run_layer_job(j, loaded, x, y, batch_size=5, progress=False, engine="fast", max_replicas=2),
    )


def test_engines_on_a_trained_network_and_level_zero_is_the_clean_model(lenet_checkpoint, digits_shards):
    loaded = load_checkpoint(lenet_checkpoint)
    loaded.model.to(DEVICE)
    x, y = load_split(digits_shards, "test")
    x, y = x[:300], y[:300]
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    for layer in find_layers(loaded.model)[::2]:
        j = LayerJob(study="t", dataset="digits", model="lenet5", layer=layer, perturbation=make_perturbation("node_knockout"),
                     levels=[0.0, 0.2, 0.6], repeats=2, study_seed=1)  # fmt: skip
        tables = {e: run_layer_job(j, loaded, x, y, batch_size=128, progress=False, engine=e) for e in ("fast", "functional", "naive")}
        assert_same(tables["naive"], tables["fast"])
        assert_same(tables["functional"], tables["fast"])
        clean = tables["fast"][tables["fast"]["level"] == 0]
        assert clean["top1"].iloc[0] > 0.5 and clean["top1"].nunique() == 1
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_mixed_precision_is_recorded_and_close_to_fp32(lenet_checkpoint, digits_shards):
    loaded = load_checkpoint(lenet_checkpoint)
    loaded.model.to(DEVICE)
    x, y = load_split(digits_shards, "test")
    layer = find_layers(loaded.model)[1]
    j = LayerJob(study="t", dataset="digits", model="lenet5", layer=layer, perturbation=make_perturbation("gaussian_noise"),
                 levels=[0.0, 0.5], repeats=2, study_seed=1)  # fmt: skip
    ref = run_layer_job(j, loaded, x, y, batch_size=540, progress=False)
    bf = run_layer_job(j, loaded, x, y, batch_size=540, progress=False, precision="bf16")
    assert (ref["precision"] == "fp32").all() and (bf["precision"] == "bf16").all()
    assert bf["top1"].to_numpy() == pytest.approx(ref["top1"].to_numpy(), abs=0.02)
    assert not bf["loss"].equals(ref["loss"])  # bf16 really ran


def test_perturbed_layer_computes_in_fp32_under_autocast():
    loaded = make_loaded("alexnet")
    x = IMAGENET(make_data(loaded)[0][:2].to(DEVICE))
    split = split_at_layer(loaded.model, find_layers(loaded.model)[2], x)
    wide = {"weight": split.module.weight, "bias": split.module.bias}
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        live = split.prefix(x)
        with torch.autocast(DEVICE.type, enabled=False):
            u = split.unit(live[split.unit_input].float(), wide, 1)
        assert live[split.unit_input].dtype == torch.bfloat16 and u.dtype == torch.float32


def test_macs_are_counted_and_split_between_prefix_and_suffix():
    model = make_loaded("alexnet").model  # 10 classes: fc8 has 4096 x 10 MACs instead of 4096 x 1000
    x = torch.randn(1, 3, 224, 224, device=DEVICE)
    layers = find_layers(model)
    totals, prefixes = [], []
    for layer in layers:
        m = macs_per_image(split_at_layer(model, layer, torch.cat([x, x])), x)
        totals.append(m["prefix"] + m["suffix"])
        prefixes.append(m["prefix"])
    # torchvision documents AlexNet (1000 classes) at 0.71 GFLOPS (multiply-accumulates) per
    # 224 x 224 image: 714.2M, of which fc8 is 4096 x 1000
    assert totals[0] == pytest.approx(714.2e6 - 4096 * 990, rel=0.001)
    assert totals == pytest.approx([totals[0]] * len(layers))
    # conv1's prefix is only the input; conv2 (64 -> 192, 5x5, 27x27) starts after conv1's 70.3M
    assert prefixes[0] == 0 and prefixes[1] == pytest.approx(64 * 3 * 11 * 11 * 55 * 55)
    assert prefixes == sorted(prefixes)


def test_replicas_follow_the_memory_budget_and_the_cap():
    loaded = make_loaded("alexnet")
    x = IMAGENET(make_data(loaded)[0][:2].to(DEVICE))
    split = split_at_layer(loaded.model, find_layers(loaded.model)[2], x)
    params = sum(t.numel() * t.element_size() for t in split.clean_tensors().values())
    per_replica = 8 * (3 * split.unit_out_bytes + split.suffix_peak_bytes) + 4 * params
    assert split.unit_out_bytes == 384 * 3 * 3 * 4  # conv3 output at 64 x 64 input, fp32
    assert choose_replicas(split, 8, 50, budget=3 * per_replica + 1) == 3
    assert choose_replicas(split, 8, 50, budget=3 * per_replica - 1) == 2
    assert choose_replicas(split, 8, 50, budget=100 * per_replica, max_replicas=5) == 5
    assert choose_replicas(split, 8, 2, budget=100 * per_replica) == 2
    assert choose_replicas(split, 8, 50, budget=0) == 1


def test_bad_engine_or_precision_is_an_error():
    loaded = make_loaded("alexnet")
    x, y = make_data(loaded)
    j = job(loaded, "alexnet", "classifier.6", "synapse_knockout", [0.5], repeats=1)
    with pytest.raises(ValueError, match="engine 'turbo' unknown"):
        run_cells(j, loaded, x, y, engine="turbo")
    with pytest.raises(ValueError, match="precision 'fp8' unknown"):
        run_cells(j, loaded, x, y, precision="fp8")
    with pytest.raises(ValueError, match="naive engine is the fp32 reference"):
        run_cells(j, loaded, x, y, engine="naive", precision="bf16")


def test_seed_independent_cells_are_computed_once_and_node_knockout_reuses_the_clean_layer():
    """Knockouts at level 1 do not depend on the seed (computed once, copied to the other
    repeats); node knockout zeroes channels of the clean layer output. Both give exactly
    the numbers of the naive reference, and a non-BN-aware node knockout (a knocked-out
    unit's BN output is not 0) takes the general path."""
    loaded = make_loaded("resnet18")
    x, y = make_data(loaded, 12)
    for path, name, opts, reuse in [
        ("layer2.0.conv2", "node_knockout", {}, True),
        ("layer2.0.conv2", "node_knockout", {"bn_aware": False}, False),
        ("fc", "synapse_knockout", {}, False),
    ]:
        j = job(loaded, "resnet18", path, name, [0.0, 0.5, 1.0], repeats=3, **opts)
        plan = FastPlan()
        got = run_fast(j, loaded.model, x, y, IMAGENET, batch_size=5, max_replicas=2, progress=False, plan=plan)
        assert plan.deduplicated == 2 and plan.reuse_clean_unit is reuse
        ref = run_cells(j, loaded, x, y, engine="naive", batch_size=5, progress=False)
        assert [(c.n, c.top1, c.top5) for c in got] == [(c.n, c.top1, c.top5) for c in ref]
        assert [c.loss_sum for c in got] == pytest.approx([c.loss_sum for c in ref], rel=1e-5)
        at_one = [c for (level, _, _), c in zip(j.cells(), got) if level == 1.0]
        assert len(at_one) == 3 and all(c is at_one[0] for c in at_one)


def test_splitting_a_network_does_not_import_sympy():
    # torch.fx's ShapeProp imports sympy (~5 s of CPU time in every job process that splits a network)
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from netperturb.core.layers import find_layers\n"
        "from netperturb.perturb.engine.graph import split_at_layer\n"
        "m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()\n"
        "s = split_at_layer(m, find_layers(m)[1], torch.randn(2, 1, 4, 4))\n"
        "assert s.unit_out_bytes == 3 * 4, s.unit_out_bytes\n"
        "print('sympy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
