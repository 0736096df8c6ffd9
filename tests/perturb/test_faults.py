"""Hardware fault models against their definitions (the Hardware faults page of the docs)."""

import math
import struct

import pytest
import torch
from torch import nn

from netperturb.core.layers import find_layers
from netperturb.core.preprocess import Preprocess
from netperturb.core.seeds import cell_generator
from netperturb.models.loaded import LoadedModel
from netperturb.perturb.faults import format_model, quantize_int8, to_format
from netperturb.perturb.faults.bits import bit_positions, choose_bits, from_bits, stored_int8, to_bits
from netperturb.perturb.grid import LayerJob, run_layer_job
from netperturb.perturb.registry import make_perturbation


def popcount(x: torch.Tensor) -> int:
    return sum(bin(v).count("1") for v in x.flatten().tolist())


def patterns(w, fmt, scale=None):
    return to_bits(w, fmt, scale)


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16", "int8"])
@pytest.mark.parametrize("rate", [1e-3, 0.01, 0.3])
def test_exactly_k_bits_flip(fmt, rate):
    w = torch.randn(40, 3, 3, 3)
    ref = to_format(w, fmt, "channel")
    p = make_perturbation("bit_flip", format=fmt, granularity="channel", count="exact")
    new = p({"weight": ref}, rate, cell_generator(3))["weight"]
    scale = stored_int8(ref, "channel")[1] if fmt == "int8" else None
    diff = patterns(ref, fmt, scale) ^ patterns(new, fmt, scale)
    width = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8}[fmt]
    k = math.floor(rate * w.numel() * width)
    if fmt in ("fp16", "bf16"):
        # a flip that makes a NaN is read back through fp32, which keeps NaN but not its
        # payload bits: count the other values exactly, and the NaNs as at least one flip each
        nan = torch.isnan(new)
        assert popcount(diff[~nan]) + int(nan.sum()) <= k <= popcount(diff[~nan]) + width * int(nan.sum())
        if not nan.any():
            assert popcount(diff) == k
    else:
        assert popcount(diff) == k


@pytest.mark.parametrize("fmt,bits", [("fp32", "exponent"), ("fp32", "mantissa"), ("fp32", "sign"),
                                      ("fp16", "exponent"), ("bf16", "mantissa"), ("int8", [0, 1]), ("fp32", [30])])
def test_only_allowed_positions_flip(fmt, bits):
    w = to_format(torch.randn(64, 32), fmt)
    p = make_perturbation("bit_flip", format=fmt, bits=bits, count="exact")
    new = p({"weight": w}, 0.2, cell_generator(1))["weight"]
    scale = stored_int8(w)[1] if fmt == "int8" else None
    diff = patterns(w, fmt, scale) ^ patterns(new, fmt, scale)
    allowed = 0
    for b in bit_positions(fmt, bits):
        allowed |= 1 << b
    keep = ~torch.isnan(new) if fmt in ("fp16", "bf16") else torch.ones_like(new, dtype=torch.bool)  # NaN payloads: see above
    assert (diff[keep] & ~allowed).eq(0).all()
    assert diff[keep].ne(0).sum() > 0.1 * w.numel()
    if keep.all():
        assert popcount(diff) == math.floor(0.2 * w.numel() * len(bit_positions(fmt, bits)))


def test_fp32_exponent_msb_flip_of_one_is_inf():
    # 1.0 = 0x3F800000: sign 0, exponent 0111 1111, mantissa 0; flipping bit 30 gives
    # exponent 1111 1111 with mantissa 0: +infinity in the IEEE 754 binary32 table
    one = torch.ones(1)
    assert to_bits(one, "fp32").item() == 0x3F800000
    out = make_perturbation("bit_flip", bits=[30])({"weight": one}, 1.0, cell_generator(0))["weight"]
    assert out.item() == math.inf
    assert struct.pack(">f", out.item()) == bytes.fromhex("7f800000")
    # sign flip of 1.0 is -1.0; the exponent LSB (bit 23) of 1.0 gives 0.5
    assert make_perturbation("bit_flip", bits="sign")({"weight": one}, 1.0, cell_generator(0))["weight"].item() == -1.0
    assert make_perturbation("bit_flip", bits=[23])({"weight": one}, 1.0, cell_generator(0))["weight"].item() == 0.5


def test_int8_round_trip_at_rate_zero_equals_the_quantized_weights():
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3)
    for gran in ("tensor", "channel"):
        codes, scale = quantize_int8(w, gran)
        q = codes.float() * scale
        assert codes.abs().max() == 127 and (codes.abs() <= 127).all()
        assert torch.equal(to_format(w, "int8", gran), q)
        # the stored network gives back its codes and scale exactly: the reference is stable
        c2, s2 = stored_int8(q, gran)
        assert torch.equal(c2, codes) and torch.equal(s2, scale)
        p = make_perturbation("bit_flip", format="int8", granularity=gran, count="exact")
        assert torch.equal(p.reference({"weight": w})["weight"], q)
        assert p({"weight": q}, 0.0, cell_generator(0)) == {}  # level 0: the quantized network itself
        # a tiny rate: every weight not hit keeps its quantized value bit for bit
        new = p({"weight": q}, 1e-3, cell_generator(0))["weight"]
        assert 0 < int((new != q).sum()) <= math.floor(1e-3 * w.numel() * 8)
    assert (codes.float() * scale - w).abs().max() <= scale.max() / 2 + 1e-7


def test_stuck_at_leaves_already_stuck_bits_unchanged():
    w = torch.randn(32, 16)
    for value in (0, 1):
        p = make_perturbation("stuck_at", value=value, count="exact")
        new = p({"weight": w}, 0.25, cell_generator(4))["weight"]
        old_p, new_p = to_bits(w, "fp32"), to_bits(new, "fp32")
        idx, masks = choose_bits(w.numel(), range(32), 0.25, cell_generator(4))
        old_v = (old_p.view(-1)[idx] & masks) != 0
        new_v = (new_p.view(-1)[idx] & masks) != 0
        assert (new_v == bool(value)).all()  # every chosen bit holds the value
        changed = popcount(old_p ^ new_p)
        assert changed == int((old_v != bool(value)).sum())  # only those that did not already
        assert 0 < changed < len(idx)


def test_bit_selection_is_uniform_and_exact():
    # every (value, bit) is chosen about equally often across seeds
    hits = torch.zeros(8 * 4)
    for s in range(400):
        i, m = choose_bits(8, [0, 1, 2, 3], 0.25, cell_generator(s))
        assert len(i) == 8
        hits[i * 4 + torch.log2(m.double()).long()] += 1
    assert hits.sum() == 3200 and hits.min() > 50 and hits.max() < 150
    # the sparse sampler (k << n) draws exactly k distinct pairs too
    i, m = choose_bits(10**7, range(32), 1e-6, cell_generator(0))
    assert len(set(zip(i.tolist(), m.tolist()))) == 320


def test_bad_options_name_the_key_and_the_allowed_values():
    with pytest.raises(ValueError, match="format: 'int4'.*fp32, fp16, bf16, int8"):
        make_perturbation("bit_flip", format="int4")
    with pytest.raises(ValueError, match="bits: bit index 40 is outside 0..31"):
        make_perturbation("bit_flip", bits=[40])
    with pytest.raises(ValueError, match="int8 has no exponent"):
        make_perturbation("bit_flip", format="int8", bits="exponent")
    with pytest.raises(ValueError, match="outside"):
        make_perturbation("bit_flip")({"weight": torch.ones(2)}, 1.5, cell_generator(0))


def test_multiplicative_noise_definition():
    w = torch.randn(50, 20)
    p = make_perturbation("multiplicative_noise")
    new = p({"weight": w}, 0.1, cell_generator(7))["weight"]
    noise = torch.randn(w.shape, generator=cell_generator(7))
    assert torch.equal(new, w * (1 + 0.1 * noise))
    assert p({"weight": w}, 0.0, cell_generator(7)) == {}


def test_format_model_stores_every_layer_in_the_format():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    q = format_model(m, "int8", "channel")
    assert q is not m and torch.equal(q[0].weight, to_format(m[0].weight, "int8", "channel"))
    assert torch.equal(q[0].bias, m[0].bias)  # include_bias off: biases stay fp32
    h = format_model(m, "fp16", include_bias=True)
    assert torch.equal(h[2].bias, m[2].bias.half().float())
    assert format_model(m, "fp32") is m


def test_from_bits_inverts_to_bits():
    w = torch.randn(100)
    for fmt in ("fp32", "fp16", "bf16"):
        r = to_format(w, fmt)
        assert torch.equal(from_bits(to_bits(r, fmt), fmt), r)
    codes, scale = quantize_int8(w)
    r = codes.float() * scale
    assert torch.equal(from_bits(to_bits(r, "int8", scale), "int8", scale), r)
    assert torch.equal(to_bits(r, "int8", scale), codes.to(torch.int64) & 0xFF)


# --------------------------------------------------------------------------------------
# Activation faults
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["activation_bit_flip", "activation_noise", "activation_stuck_at"])
def test_transient_activation_faults_do_not_depend_on_the_batch(name):
    fault = make_perturbation(name)
    y = torch.randn(64, 4, 5, 5)
    whole = fault.apply_activation(y, 0.01, 99, torch.arange(64))
    for bs in (1, 7, 64):
        parts = [fault.apply_activation(y[s : s + bs], 0.01, 99, torch.arange(s, min(s + bs, 64))) for s in range(0, 64, bs)]
        assert torch.equal(torch.cat(parts).view(torch.int32), whole.view(torch.int32))  # bit for bit (NaN too)
    assert not torch.equal(whole[0] / y[0], whole[1] / y[1])  # each image its own pattern
    assert torch.equal(fault.apply_activation(y, 0.0, 99, torch.arange(64)), y)


def test_activation_bit_flip_counts_and_permanent_patterns():
    y = torch.randn(6, 3, 4, 4)
    t = make_perturbation("activation_bit_flip", transient=True, count="exact").apply_activation(y, 0.02, 5, torch.arange(6))
    k = math.floor(0.02 * 48 * 32)
    for r in range(6):
        assert popcount(to_bits(y[r], "fp32") ^ to_bits(t[r], "fp32")) == k
    p = make_perturbation("activation_bit_flip", transient=False).apply_activation(y, 0.02, 5, torch.arange(6))
    d = to_bits(y, "fp32") ^ to_bits(p, "fp32")
    assert all(torch.equal(d[0], d[r]) for r in range(6))  # one pattern for every image


# --------------------------------------------------------------------------------------
# Engines and SDC
# --------------------------------------------------------------------------------------

PRE = Preprocess(scale=1 / 255, mean=(0.5,), std=(0.5,), size=None)


def tiny_loaded():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(),
        nn.Linear(16, 10),
    ).eval().requires_grad_(False)  # fmt: skip
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 2)
    return LoadedModel(model=model, preprocess=PRE, arch="tiny", weights="random", meta={})


def data(loaded, n=30):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        y = loaded.model(PRE(x)).argmax(1)
    y[::3] = torch.randint(0, 10, (len(y[::3]),), generator=g)
    return x, y


def make_job(loaded, path, name, levels, repeats=2, **opts):
    layer = {l.path: l for l in find_layers(loaded.model)}[path]
    return LayerJob(study="t", dataset="r", model="tiny", layer=layer, perturbation=make_perturbation(name, **opts),
                    levels=levels, repeats=repeats, study_seed=3)  # fmt: skip


CASES = [
    ("bit_flip", {"format": "fp32"}, [0.0, 0.001, 0.01]),
    ("bit_flip", {"format": "fp32", "bits": "exponent"}, [0.0, 0.005]),
    ("bit_flip", {"format": "int8", "granularity": "channel"}, [0.0, 0.01, 0.05]),
    ("stuck_at", {"value": 1, "bits": "mantissa"}, [0.0, 0.05]),
    ("multiplicative_noise", {}, [0.0, 0.5]),
    ("activation_bit_flip", {"transient": True}, [0.0, 0.001, 0.01]),
    ("activation_bit_flip", {"transient": False, "bits": "exponent"}, [0.0, 0.01]),
    ("activation_noise", {}, [0.0, 0.5]),
    ("activation_stuck_at", {"value": 0}, [0.0, 0.1]),
]


@pytest.mark.parametrize("name,opts,levels", CASES)
def test_engine_equals_naive_on_fault_cells(name, opts, levels):
    loaded = tiny_loaded()
    if opts.get("format", "fp32") != "fp32":
        loaded = LoadedModel(format_model(loaded.model, opts["format"], opts.get("granularity", "tensor")), PRE,
                             "tiny", "random", {})  # fmt: skip
    x, y = data(loaded)
    for path in ("0", "7"):
        j = make_job(loaded, path, name, levels)
        naive = run_layer_job(j, loaded, x, y, batch_size=7, progress=False, engine="naive")
        fast = run_layer_job(j, loaded, x, y, batch_size=7, progress=False, engine="fast", max_replicas=3)
        func = run_layer_job(j, loaded, x, y, batch_size=11, progress=False, engine="functional")
        for other in (fast, func):
            assert naive["top1"].tolist() == other["top1"].tolist()
            assert naive["top5"].tolist() == other["top5"].tolist()
            assert naive["due"].tolist() == other["due"].tolist()
            assert naive["sdc1"].to_numpy() == pytest.approx(other["sdc1"].to_numpy(), nan_ok=True)
            assert naive["sdc5"].to_numpy() == pytest.approx(other["sdc5"].to_numpy(), nan_ok=True)
            assert naive["loss"].to_numpy() == pytest.approx(other["loss"].to_numpy(), rel=1e-5, nan_ok=True)
        zero = naive[naive["level"] == 0]
        assert (zero["sdc1"] == 0).all() and (zero["sdc5"] == 0).all() and (zero["due"] == 0).all()


def test_sdc1_equals_a_count_by_hand():
    loaded = tiny_loaded()
    x, y = data(loaded)
    j = make_job(loaded, "7", "bit_flip", [0.0, 0.02], repeats=1, bits="exponent")
    df = run_layer_job(j, loaded, x, y, batch_size=8, progress=False, engine="fast")
    level, _, seed = list(j.cells())[1]
    model = loaded.model
    new = j.perturbation({"weight": model[7].weight}, level, cell_generator(seed))["weight"]
    with torch.no_grad():
        clean = model(PRE(x))
        old = model[7].weight.clone()
        model[7].weight.copy_(new)
        faulty = model(PRE(x))
        model[7].weight.copy_(old)
    right = clean.argmax(1) == y
    finite = torch.isfinite(faulty).all(1)
    changed = right & finite & (faulty.argmax(1) != clean.argmax(1))
    row = df[df["level"] > 0].iloc[0]
    assert row["sdc1"] == pytest.approx(int(changed.sum()) / int(right.sum()))
    assert row["due"] == pytest.approx(int((~finite).sum()) / len(y))
    assert 0 < row["sdc1"] + row["due"]  # the exponent flips of fc8 do something
    assert df[df["level"] == 0]["sdc1"].iloc[0] == 0


def test_nan_and_inf_are_results():
    loaded = tiny_loaded()
    x, y = data(loaded)
    # every bit of every weight of fc stuck at 1: each weight is 0xFFFFFFFF, a NaN
    j = make_job(loaded, "9", "stuck_at", [1.0], repeats=1, value=1)
    df = run_layer_job(j, loaded, x, y, batch_size=8, progress=False, engine="fast")
    assert df["due"].iloc[0] == 1.0  # every image meets a NaN logit
    assert df["sdc1"].iloc[0] == 0.0  # DUE images are not counted as SDC
    assert df["top1"].iloc[0] == 0.0 and df["loss"].isna().iloc[0]
