"""The engine on today's architectures: the 8-model matrix (random init, small inputs).

For each model: the layers cover >= 99 % of the parameters, level 0 equals the clean model,
the fast engine equals the naive loop bit for bit (one thread), knockouts and bit flips
change exactly the counts their definitions give, and the log says which path each layer
took. The fast-vs-naive runs use a few chosen layers per model (the first, a middle one, the
last, an attention in_proj, a depthwise conv) to keep the suite short. timm is a test extra
(the dev group installs it); its two models are skipped without it.
"""

from __future__ import annotations

import inspect
import logging
import math

import pytest
import torch
from conftest import randomise_bn

from netperturb.core.evaluate import evaluate
from netperturb.core.layers import find_layers, parameter_coverage
from netperturb.core.preprocess import Preprocess
from netperturb.core.seeds import cell_generator
from netperturb.models.loaded import LoadedModel
from netperturb.perturb.base import n_chosen
from netperturb.perturb.engine.runners import FastPlan, run_cells, run_fast
from netperturb.perturb.grid import LayerJob, layer_params
from netperturb.perturb.registry import make_perturbation

IMAGENET = Preprocess(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), size=None)
N_IMAGES = 6
BATCH = 3


def _tv(name, **kw):
    import torchvision

    return lambda num_classes=10, **extra: torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kw, **extra)


def _timm(name, **kw):
    def make(num_classes=10, **extra):
        timm = pytest.importorskip("timm")
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kw, **extra)

    return make


# name -> (builder, input side used in the tests, the small-input keyword of the builder)
ARCHS = {
    "resnet18": (_tv("resnet18"), 32, {}),
    "mobilenet_v3_small": (_tv("mobilenet_v3_small"), 32, {}),
    "efficientnet_b0": (_tv("efficientnet_b0"), 32, {}),
    "convnext_tiny": (_tv("convnext_tiny"), 32, {}),
    "vit_b_16": (_tv("vit_b_16"), 32, {"image_size": 32}),
    "swin_t": (_tv("swin_t"), 32, {}),
    "timm_resnet18": (_timm("resnet18"), 32, {}),
    "timm_vit_tiny_patch16_224": (_timm("vit_tiny_patch16_224"), 32, {"img_size": 32}),
}
# the hook path (forced) is compared with the naive loop on these
HOOKED = ("resnet18", "mobilenet_v3_small", "vit_b_16", "timm_vit_tiny_patch16_224")
# each chosen layer gets one perturbation, in turn (levels: 0 and one more, 2 repeats)
PERTURBATIONS = [("gaussian_noise", 1.0, {}), ("node_knockout", 0.5, {}), ("synapse_knockout", 0.5, {}),
                 ("bit_flip", 1e-3, {"bits": "exponent"})]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """Bit-for-bit comparisons at one thread (CPU kernels may split sums by thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=list(ARCHS))
def case(request):
    """(name, the random-init model at its small input size, images, labels). Module scope:
    pytest runs every test of one architecture before building the next (ViT-B/16 is 86 M
    parameters). Labels are mostly the clean network's own top-1 (accuracy starts high, so
    every perturbation moves it)."""
    arch = request.param
    build, side, small = ARCHS[arch]
    torch.manual_seed(0)
    model = randomise_bn(build(**small)).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(2)
    for p in model.parameters():  # zero-initialised biases and heads (ViT's head): small random values,
        if not p.any():  # so that every knocked-out entry changes something and the logits depend on the input
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    lm = LoadedModel(model=model, preprocess=IMAGENET, arch=arch, weights="random", meta={})
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (N_IMAGES, 3, side, side), dtype=torch.uint8, generator=g)
    calibrate_bn(model, IMAGENET(torch.randint(0, 256, (16, 3, side, side), dtype=torch.uint8, generator=g)))
    with torch.no_grad():
        y = model(IMAGENET(x)).argmax(1)
    y[::3] = torch.randint(0, 10, (len(y[::3]),), generator=g)
    return arch, lm, x, y


def calibrate_bn(model, x):
    """BatchNorm running statistics of ``x`` (a random-init network with made-up statistics
    squashes the differences between images to nothing after a dozen blocks: MobileNetV3's
    logits then agree to 1e-9 for every image and no perturbation is felt)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def chosen(layers):
    """The first layer, a middle one, the last, the first attention in_proj, the first
    depthwise / grouped convolution and the first attention qkv (those the model has), in
    depth order."""
    pick = {layers[0].path, layers[len(layers) // 2].path, layers[-1].path}
    pick.update([l.path for l in layers if l.kind == "in_proj"][:1])
    pick.update([l.path for l in layers if l.groups > 1][:1])
    pick.update([l.path for l in layers if l.path.endswith("attn.qkv")][:1])  # Swin: read by shifted_window_attention
    return [l for l in layers if l.path in pick]


def bit_flip_exact():
    """bit_flip with an exact count per cell (the option's name if the family has one)."""
    from netperturb.perturb.faults.weights import BitFlip

    return {"count": "exact"} if "count" in inspect.signature(BitFlip.__init__).parameters else {}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_layers_cover_the_parameters_of_the_published_architecture(arch):
    """>= 99 % of the parameters of the architecture as published (1000 classes, its own input
    size; built on the meta device, no memory) are a layer's weight or bias."""
    build = ARCHS[arch][0]
    with torch.device("meta"):
        model = build(num_classes=1000)
    layers = find_layers(model)
    assert parameter_coverage(model, layers) >= 0.99
    assert len({l.path for l in layers}) == len(layers)
    for layer in layers:  # every role names a parameter of the model, of the recorded shape
        named = dict(model.named_parameters())
        names = layer.param_names()
        assert tuple(named[names["weight"]].shape) == layer.weight_shape
        assert ("bias" in names) == layer.has_bias


def test_vit_in_proj_is_a_layer_and_holds_a_quarter_of_the_parameters():
    """torchvision ViT-B/16: the attention's in_proj_weight was no layer (24.6 % of the
    parameters could never be perturbed)."""
    import torchvision

    with torch.device("meta"):
        model = torchvision.models.vit_b_16()
    layers = find_layers(model)
    in_proj = [l for l in layers if l.kind == "in_proj"]
    assert len(in_proj) == 12 and all(l.weight_shape == (3 * 768, 768) and l.has_bias for l in in_proj)
    total = sum(p.numel() for p in model.parameters())
    assert sum(l.n_params for l in in_proj) / total == pytest.approx(0.2456, abs=5e-4)
    assert parameter_coverage(model, [l for l in layers if l.kind != "in_proj"]) < 0.76
    assert in_proj[0].path == "encoder.layers.encoder_layer_0.self_attention.in_proj"
    assert in_proj[0].param_names() == {
        "weight": "encoder.layers.encoder_layer_0.self_attention.in_proj_weight",
        "bias": "encoder.layers.encoder_layer_0.self_attention.in_proj_bias",
    }


def test_knockout_and_flip_counts_are_exact(case):
    """On the chosen layers: synapse knockout zeroes exactly floor(p n) weights and floor(p
    n_bias) biases, node knockout exactly floor(p n_out) whole output units (rows of an
    in_proj), a bit flip at rate r flips exactly floor(r n 32) stored bits."""
    model = case[1].model
    for layer in chosen(find_layers(model)):
        params = layer_params(model, layer)
        w = params["weight"]
        new = make_perturbation("synapse_knockout")(params, 0.3, cell_generator(1))
        changed = new["weight"] != w
        assert int(changed.sum()) == n_chosen(0.3, w.numel()) and bool((new["weight"][changed] == 0).all())
        if layer.has_bias:
            assert int((new["bias"] != params["bias"]).sum()) == n_chosen(0.3, params["bias"].numel())
        new = make_perturbation("node_knockout")(params, 0.25, cell_generator(2))
        rows = new["weight"].reshape(layer.n_out, -1)
        dead = (rows == 0).all(1)
        assert int(dead.sum()) == n_chosen(0.25, layer.n_out) == math.floor(0.25 * layer.n_out)
        assert torch.equal(rows[~dead], w.reshape(layer.n_out, -1)[~dead])
        if layer.has_bias:
            assert bool((new["bias"][dead] == 0).all()) and torch.equal(new["bias"][~dead], params["bias"][~dead])
        new = make_perturbation("bit_flip", **bit_flip_exact())(params, 1e-3, cell_generator(3))
        xor = new["weight"].view(torch.int32) ^ w.view(torch.int32)
        flipped = sum(bin(v & 0xFFFFFFFF).count("1") for v in xor[xor != 0].tolist())
        assert flipped == n_chosen(1e-3, w.numel() * 32)


def identical(a, b, *, loss_rel: float = 0.0) -> bool:
    """Two lists of Counts agree in every field; a NaN loss sum (a flip to NaN) equals NaN.

    ``loss_rel`` > 0 lets the loss sums differ by that relative amount: the engine's ``delta``
    path adds the correction ``x * (w' - w)`` to the clean output, so its logits differ from the
    naive loop's by float rounding (whether a sum comes out the same depends on the CPU's matrix
    kernels: one image's loss 1 ulp apart for convnext_tiny's head on an AVX-512 EPYC); every
    count (top-1, top-5, SDC, DUE) must still be equal."""
    def key(c):
        return (c.n, c.top1, c.top5, c.sdc1, c.sdc1_of, c.sdc5, c.sdc5_of, c.due)

    def loss_equal(x, y):
        x, y = x.loss_sum, y.loss_sum  # exact (Fractions) unless one is a NaN float
        if math.isnan(float(x)) or math.isnan(float(y)):
            return math.isnan(float(x)) and math.isnan(float(y))
        return x == y if loss_rel == 0 else math.isclose(float(x), float(y), rel_tol=loss_rel, abs_tol=loss_rel)

    return len(a) == len(b) and all(key(x) == key(y) and loss_equal(x, y) for x, y in zip(a, b))


def _job(arch, layer, name, level, opts, repeats=2):
    return LayerJob(study="t", dataset="random", model=arch, layer=layer, perturbation=make_perturbation(name, **opts),
                    levels=[0.0, level], repeats=repeats, study_seed=2017)  # fmt: skip


def test_fast_equals_naive_bit_for_bit_and_level_zero_is_the_clean_model(case, caplog):
    arch, lm, x, y = case
    clean = evaluate(lm.model, x, y, IMAGENET, batch_size=BATCH)
    layers = chosen(find_layers(lm.model))
    for i, layer in enumerate(layers):
        name, level, opts = PERTURBATIONS[i % len(PERTURBATIONS)]
        if name == "bit_flip":
            opts = {**opts, **bit_flip_exact()}
        job = _job(arch, layer, name, level, opts)
        plan = FastPlan()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="netperturb"):
            fast = run_fast(job, lm.model, x, y, IMAGENET, batch_size=BATCH, max_replicas=2, progress=False, plan=plan)
        naive = run_cells(job, lm, x, y, engine="naive", batch_size=BATCH, progress=False)
        # every count exact (top-1, top-5, SDC, DUE) and the loss sum too, except where a cell took
        # the delta path (the clean output plus a correction: the same sum in another order)
        assert identical(fast, naive, loss_rel=1e-6 if plan.paths.get("delta") else 0.0), (layer.path, name, plan.paths)
        assert identical(fast[:2], [clean, clean])  # level 0: the clean network, bit for bit
        assert any(c.loss_sum != clean.loss_sum for c in naive[2:]), (layer.path, name)  # not vacuous
        assert plan.path == "graph" and plan.fallback is None, (layer.path, plan.fallback)
        assert any(f"{layer.label}:{name}: graph split" in r.getMessage() for r in caplog.records), caplog.text


def test_hook_path_equals_naive_on_the_architectures(case, caplog):
    """The hook path (forced here; it serves models torch.fx cannot trace) gives the naive
    loop's numbers bit for bit: a conv with BatchNorm, a depthwise conv, an in_proj, a
    timm attention qkv."""
    arch, lm, x, y = case
    if arch not in HOOKED:
        pytest.skip("the hook path is checked on four of the architectures")
    layers = find_layers(lm.model)
    pick = [l for l in layers if l.kind == "in_proj"][:1] or [l for l in layers if l.groups > 1][:1] or [layers[len(layers) // 2]]
    if arch.startswith("timm"):
        pick = [l for l in layers if l.path.endswith("attn.qkv")][1:2]
    for layer, (name, level, opts) in zip(pick * 2, PERTURBATIONS[:2]):
        job = _job(arch, layer, name, level, opts)
        plan = FastPlan()
        with caplog.at_level(logging.INFO, logger="netperturb"):
            fast = run_fast(job, lm.model, x, y, IMAGENET, batch_size=BATCH, max_replicas=2, progress=False, plan=plan, path="hooks")
        assert plan.path == "hooks", plan.fallback
        assert identical(fast, run_cells(job, lm, x, y, engine="naive", batch_size=BATCH, progress=False)), (layer.path, name)
    assert "hook path" in caplog.text
