"""Sparse fault paths of the engine, the Perturbation interface, binomial bit-error counts and int8 = torch.ao."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from netperturb.core.layers import find_layers
from netperturb.core.preprocess import Preprocess
from netperturb.core.seeds import cell_generator
from netperturb.models.loaded import LoadedModel
from netperturb.perturb.base import ENTRIES, Change, Perturbation
from netperturb.perturb.engine import costs, sparse
from netperturb.perturb.engine.runners import FastPlan, run_fast, run_naive
from netperturb.perturb.faults import format_model, quantize_int8
from netperturb.perturb.faults.bits import choose_bits, choose_k_bits, n_chosen, n_faults, stored_int8, to_bits
from netperturb.perturb.grid import LayerJob
from netperturb.perturb.registry import make_perturbation

PRE = Preprocess(scale=1 / 255, mean=(0.5,), std=(0.5,), size=None)
ENGINE = Path(__file__).resolve().parents[2] / "src" / "netperturb" / "perturb" / "engine"


def popcount(x: torch.Tensor) -> np.ndarray:
    """Set bits per element of a non-negative int64 tensor."""
    x = x.clone()
    out = torch.zeros_like(x)
    while bool((x != 0).any()):
        out += x & 1
        x >>= 1
    return out.numpy()


def chi2_binomial(counts: np.ndarray, n: int, r: float) -> float:
    """p-value of a chi-square goodness-of-fit test of ``counts`` against Binomial(n, r),
    bins merged so that every expected count is >= 5."""
    dist = stats.binom(n, r)
    lo, hi = int(dist.ppf(1e-4)), int(dist.ppf(1 - 1e-4))
    edges = list(range(lo, hi + 1))
    obs = [int((counts <= lo).sum())] + [int((counts == v).sum()) for v in edges[1:-1]] + [int((counts >= hi).sum())]
    exp = [dist.cdf(lo)] + [dist.pmf(v) for v in edges[1:-1]] + [dist.sf(hi - 1)]
    obs_m, exp_m, acc_o, acc_e = [], [], 0, 0.0
    for o, e in zip(obs, exp):
        acc_o, acc_e = acc_o + o, acc_e + e * len(counts)
        if acc_e >= 5:
            obs_m.append(acc_o)
            exp_m.append(acc_e)
            acc_o, acc_e = 0, 0.0
    obs_m[-1] += acc_o
    exp_m[-1] += acc_e
    exp_m = np.array(exp_m) * len(counts) / sum(exp_m)
    return float(stats.chisquare(obs_m, exp_m).pvalue)


# --------------------------------------------------------------------------------------
# Bit error rate: binomial counts
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("population,rate", [(4608, 1e-3), (4608, 1e-4), (37_748_736 * 32, 1e-7)])
def test_binomial_counts_follow_the_binomial_distribution(population, rate):
    counts = np.array([n_faults(population, rate, "binomial", cell_generator(s)) for s in range(3000)])
    assert chi2_binomial(counts, population, rate) > 1e-3
    m = population * rate
    assert abs(counts.mean() - m) < 4 * math.sqrt(m * (1 - rate) / len(counts))
    # a pure function of the seed
    assert n_faults(population, rate, "binomial", cell_generator(7)) == n_faults(population, rate, "binomial", cell_generator(7))


def test_weight_bit_flips_flip_a_binomial_number_of_bits():
    # conv1 of the digit AlexNet has 4,608 bits: at 1e-3 the exact count is floor(4.6) = 4 every time
    w = torch.randn(16, 1, 3, 3)
    bf = make_perturbation("bit_flip")
    flips = np.array([int(popcount(to_bits(w, "fp32") ^ to_bits(bf({"weight": w}, 1e-3, cell_generator(s)).get("weight", w), "fp32")).sum())
                      for s in range(1500)])  # fmt: skip
    assert chi2_binomial(flips, 4608, 1e-3) > 1e-3
    assert (flips == 0).any() and flips.max() > 4  # neither floor(4.6) nor a fixed count
    exact = make_perturbation("bit_flip", count="exact")
    for s in range(5):
        new = exact({"weight": w}, 1e-3, cell_generator(s))["weight"]
        assert int(popcount(to_bits(w, "fp32") ^ to_bits(new, "fp32")).sum()) == 4


def test_exact_count_is_the_previous_selection():
    # count: exact draws nothing for the count: the same pairs as the k-subset sampler with
    # floor(r n m), from the same generator state (netperturb 0.2's selection)
    for seed in range(5):
        a = choose_bits(1000, range(32), 1e-3, cell_generator(seed), "exact")
        b = choose_k_bits(1000, range(32), n_chosen(1e-3, 32_000), cell_generator(seed))
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    bad = "count: 'poisson' unknown; allowed: binomial, exact"
    with pytest.raises(ValueError, match=bad):
        make_perturbation("bit_flip", count="poisson")
    with pytest.raises(ValueError, match=bad):
        make_perturbation("activation_bit_flip", count="poisson")


def test_activation_flips_per_image_are_binomial_and_stuck_at_the_same():
    y = torch.randn(2000, 8, 4, 4)  # 128 values x 32 bits = 4096 bits per image
    fault = make_perturbation("activation_bit_flip", transient=True)
    out = fault.apply_activation(y, 2e-3, 11, torch.arange(len(y)))
    per_image = popcount(to_bits(y, "fp32") ^ to_bits(out, "fp32")).reshape(len(y), -1).sum(1)
    assert chi2_binomial(per_image, 4096, 2e-3) > 1e-3
    # stuck-at: the number of *chosen* bits is binomial; a chosen bit may already hold the value
    st = make_perturbation("stuck_at", value=1)
    w = torch.zeros(64, 8)  # every bit 0: each chosen bit changes
    changed = np.array([int(popcount(to_bits(st({"weight": w}, 1e-3, cell_generator(s)).get("weight", w), "fp32")).sum())
                        for s in range(1500)])  # fmt: skip
    assert chi2_binomial(changed, 64 * 8 * 32, 1e-3) > 1e-3


# --------------------------------------------------------------------------------------
# int8 = torch.ao
# --------------------------------------------------------------------------------------


def torch_ao(w: torch.Tensor, granularity: str):
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

    kw = dict(dtype=torch.qint8, quant_min=-127, quant_max=127)
    if granularity == "tensor":
        ob = MinMaxObserver(qscheme=torch.per_tensor_symmetric, **kw)
        ob(w)
        s, z = ob.calculate_qparams()
        q = torch.quantize_per_tensor(w, float(s), int(z), torch.qint8)
        return q.int_repr(), s.reshape(()), q.dequantize()
    ob = PerChannelMinMaxObserver(ch_axis=0, qscheme=torch.per_channel_symmetric, **kw)
    ob(w)
    s, z = ob.calculate_qparams()
    q = torch.quantize_per_channel(w, s, z, 0, torch.qint8)
    return q.int_repr(), s.reshape(-1, *([1] * (w.ndim - 1))), q.dequantize()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_int8_quantization_equals_torch_ao_code_for_code():
    import torchvision

    torch.manual_seed(0)
    tensors = [torch.randn(64, 3, 7, 7), torch.randn(1000, 512) * 1e-3, torch.rand(17, 5) - 0.7,
               torch.zeros(4, 3), torch.full((3, 2), 1e-9)]  # fmt: skip
    resnet = torchvision.models.resnet18()  # real shapes (11.2 M weights), random init
    tensors += [m.weight.detach() for m in resnet.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for w in tensors:
        for gran in ("tensor", "channel"):
            codes, scale = quantize_int8(w, gran)
            ref_codes, ref_scale, deq = torch_ao(w, gran)
            assert torch.equal(codes, ref_codes), (tuple(w.shape), gran)
            assert torch.equal(scale, ref_scale)
            assert torch.equal(codes.float() * scale, deq)  # the dequantized network torch.ao gives
            c2, s2 = stored_int8(deq, gran)  # and the stored network gives back its codes and scale
            assert torch.equal(c2, codes) and torch.equal(s2, scale)
    # the all-zero tensor gets torch's floor of the scale, float32 epsilon
    assert quantize_int8(torch.zeros(3))[1].item() == torch.finfo(torch.float32).eps


def test_a_format_fault_on_weights_not_stored_in_it_is_an_error():
    torch.manual_seed(0)
    w = torch.randn(64, 10)  # 640 fp32 weights
    for fmt in ("int8", "fp16", "bf16"):
        p = make_perturbation("bit_flip", format=fmt)
        with pytest.raises(ValueError, match=rf"not stored in {fmt}.*format_model"):
            p({"weight": w}, 1e-7, cell_generator(0))
        with pytest.raises(ValueError, match=rf"not stored in {fmt}"):
            p.draw({"weight": w}, 1e-7, cell_generator(0))
    m = format_model(nn.Sequential(nn.Linear(10, 64)), "int8", "channel")
    q = m[0].weight.detach()
    p = make_perturbation("bit_flip", format="int8", granularity="channel")
    out = p({"weight": q}, 1e-7, cell_generator(0))  # 5,120 bits at 1e-7: no flip, nothing changes
    assert list(out) == ["weight"] and out["weight"] is not q and torch.equal(out["weight"].view(torch.int32), q.view(torch.int32))


# --------------------------------------------------------------------------------------
# The interface: the engine asks what a perturbation changes
# --------------------------------------------------------------------------------------


def test_the_engine_never_tests_a_family():
    families = {"SynapseKnockout", "NodeKnockout", "GaussianNoise", "BitFlip", "StuckAt", "ActivationFault",
                "is_activation_fault", "knockouts", "noise", "faults", "filters"}  # fmt: skip
    for path in ENGINE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not set(node.module.split(".")) & families, (path.name, node.module)
                assert not {a.name for a in node.names} & families, (path.name, node.module)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                assert "Perturbation" not in ast.unparse(node), (path.name, ast.unparse(node))


class ScaleFew(Perturbation):
    """A family the engine has never seen: multiply every 7th weight by (1 + level)."""

    name = "scale_few"
    max_level = 10.0
    changes = ENTRIES

    def _draw(self, params, level, generator, context):
        w = params["weight"]
        idx = torch.arange(0, w.numel(), 7, device=w.device)
        return {"weight": Change("entries", idx, w.reshape(-1)[idx] * (1 + level))}


def tiny_loaded():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1, stride=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=(1, 2), stride=(1, 2), groups=2), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 4 * 3, 16), nn.ReLU(), nn.Linear(16, 10),
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


def job_for(loaded, path, pert, levels, repeats=3):
    layer = {l.path: l for l in find_layers(loaded.model)}[path]
    return LayerJob(study="t", dataset="r", model="tiny", layer=layer, perturbation=pert, levels=levels,
                    repeats=repeats, study_seed=5)  # fmt: skip


def same_counts(a, b):
    for x, y in zip(a, b):
        assert (x.n, x.top1, x.top5, x.due) == (y.n, y.top1, y.top5, y.due)
        assert (x.sdc1, x.sdc5) == (y.sdc1, y.sdc5)


CASES = [
    ("bit_flip", {"format": "fp32"}, [0.0, 1e-4, 2e-3, 0.02]),
    ("bit_flip", {"format": "fp32", "bits": "exponent", "include_bias": True}, [0.0, 1e-3, 0.01]),
    ("bit_flip", {"format": "int8", "granularity": "channel", "include_bias": True}, [0.0, 1e-3, 0.03]),
    ("stuck_at", {"value": 1, "bits": "mantissa", "count": "exact"}, [0.0, 0.01]),
    ("synapse_knockout", {}, [0.0, 0.01, 0.3, 1.0]),
]


@pytest.mark.parametrize("path", ["delta", "inplace", "dense", None])
@pytest.mark.parametrize("name,opts,levels", CASES)
def test_every_sparse_path_gives_the_naive_counts(monkeypatch, path, name, opts, levels):
    forced = []
    if path is not None:
        def force(cm, prof, **kw):
            forced.append(kw["delta_ok"])
            return ("delta" if kw["delta_ok"] else "inplace") if path == "delta" else path, {}

        monkeypatch.setattr(sparse, "cell_path", force)
    loaded = tiny_loaded()
    if opts.get("format", "fp32") != "fp32":
        loaded = LoadedModel(format_model(loaded.model, opts["format"], opts.get("granularity", "tensor"),
                                          opts.get("include_bias", False)), PRE, "tiny", "random", {})  # fmt: skip
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    x, y = data(loaded)
    for layer in ("0", "4", "7", "9"):
        job = job_for(loaded, layer, make_perturbation(name, **opts), levels)
        naive = run_naive(job, loaded.model, x, y, PRE, batch_size=7, progress=False)
        plan = FastPlan()
        fast = run_fast(job, loaded.model, x, y, PRE, batch_size=7, max_replicas=4, progress=False, plan=plan)
        same_counts(naive, fast)
        assert plan.fallback is None and sum(plan.paths.values()) > 0
        if path is not None and path != "delta":
            assert set(plan.paths) <= {path, "clean"}
    if path == "delta":  # the correction was used for bit faults; a knockout writes zeros: never
        assert any(forced) == (name != "synapse_knockout")
    for k, v in loaded.model.state_dict().items():  # the model is never modified
        assert torch.equal(v.view(torch.uint8) if v.is_floating_point() else v, before[k].view(torch.uint8) if v.is_floating_point() else before[k])


def test_a_new_family_needs_no_engine_change():
    loaded = tiny_loaded()
    x, y = data(loaded)
    for layer in ("0", "7"):
        job = job_for(loaded, layer, ScaleFew(), [0.0, 0.5, 3.0], repeats=1)
        plan = FastPlan()
        fast = run_fast(job, loaded.model, x, y, PRE, batch_size=8, progress=False, plan=plan)
        same_counts(run_naive(job, loaded.model, x, y, PRE, batch_size=8, progress=False), fast)
        assert sum(plan.paths.values()) == 2


def test_the_correction_equals_the_layer_with_the_changed_weights():
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 8, (3, 2), padding=(1, 0), stride=(2, 1), dilation=(1, 2), groups=2).eval()
    lin = nn.Linear(12, 5).eval()
    for module, x in ((conv, torch.randn(4, 6, 9, 9)), (lin, torch.randn(4, 12))):
        model = nn.Sequential(module).eval().requires_grad_(False)
        from netperturb.perturb.engine.graph import split_at_layer

        split = split_at_layer(model, "0", x[:2])
        params = split.clean_tensors()
        idx = torch.tensor([0, 5, 17, module.weight.numel() - 1])
        vals = module.weight.detach().reshape(-1)[idx] * torch.tensor([3.0, -1.0, 0.0, 1e4])
        cell = sparse.prepare_cell({"weight": Change("entries", idx, vals)}, params, split,
                                   lambda **kw: "delta", sparse.delta_supported(split))  # fmt: skip
        assert cell.path == "delta"
        w2 = module.weight.detach().clone()
        w2.view(-1)[idx] = vals
        with torch.no_grad():
            want = module._conv_forward(x, w2, module.bias) if module is conv else nn.functional.linear(x, w2, module.bias)
            clean = module(x)
            got = torch.empty_like(clean)
            sparse._delta_output(split, cell, sparse._pad(split, x), clean, clean, got, dict(params))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
        untouched = torch.ones(want.shape[1], dtype=torch.bool)
        untouched[cell.aff] = False
        assert torch.equal(got.transpose(0, 1)[untouched], clean.transpose(0, 1)[untouched])


# --------------------------------------------------------------------------------------
# The cost model
# --------------------------------------------------------------------------------------


def test_the_cost_model_picks_delta_for_few_entries_and_dense_for_many():
    prof = costs.SuffixProfile(unit_macs=37.7e6, unit_out=4096, spatial=1, suffix_conv_macs=0.0,
                               suffix_linear_macs=20.9e6, suffix_weight_bytes=84_000_000, suffix_act_bytes=32_000,
                               suffix_nodes=6)  # fmt: skip  -- AlexNet fc6 and what is above it
    kw = dict(n_params=37_752_832, batch=32, n_batches=1, conv=False, delta_ok=True)
    assert costs.cell_path(costs.CPU, prof, k=12, **kw)[0] == "delta"
    assert costs.cell_path(costs.CPU, prof, k=20_000_000, from_mask=True, **kw)[0] == "dense"
    assert costs.cell_path(costs.CPU, prof, k=12, **{**kw, "delta_ok": False})[0] == "inplace"
    # a dense-layer suffix read once per call is worth sharing between cells, within memory
    k = costs.suffix_replicas(costs.CPU, prof, batch=32, per_replica_seconds=1e-3, per_replica_bytes=1 << 20,
                              budget=1 << 40, n_cells=100)  # fmt: skip
    assert 1 < k <= 100
    assert costs.suffix_replicas(costs.CPU, prof, batch=32, per_replica_seconds=1e-3, per_replica_bytes=1 << 20,
                                 budget=3 << 20, n_cells=100) == 3  # fmt: skip
    assert costs.suffix_replicas(costs.CPU, prof, batch=32, per_replica_seconds=1e-3, per_replica_bytes=1,
                                 budget=1 << 40, n_cells=100, cap=2) == 2  # fmt: skip


@pytest.mark.parametrize("oversample", ["default", "none"])
def test_choose_k_bits_many_equals_choose_k_bits_per_generator(monkeypatch, oversample):
    """The batched draw of a transient activation fault picks, for every image, exactly the
    (value, bit) pairs of the one-image sampler with that image's generator: sparse rows,
    dense rows (k >= population / 64), empty rows, and (with no oversampling, so first rounds
    fall short) rows that need a second round."""
    import netperturb.perturb.faults.bits as bits
    from netperturb.core.seeds import cell_generator
    from netperturb.perturb.faults.bits import choose_k_bits_many

    if oversample == "none":
        monkeypatch.setattr(bits, "_oversample", lambda need: need)
    shorts = []
    real_from = bits._sparse_from
    monkeypatch.setattr(bits, "_sparse_from", lambda *a: shorts.append(1) or real_from(*a))
    n_values, positions = 300, range(32)  # 9,600 bits: k < 150 is sparse
    ks = [0, 1, 3, 40, 149, 150, 900, 0, 12, 9_600, 20_000] + [int(k) for k in np.random.default_rng(0).integers(0, 140, 60)]
    seeds = range(100, 100 + len(ks))
    rows, idx, masks = choose_k_bits_many(n_values, positions, ks, [cell_generator(s) for s in seeds])
    assert rows.numel() == idx.numel() == masks.numel() == sum(min(k, n_values * 32) for k in ks)
    for r, (k, s) in enumerate(zip(ks, seeds)):
        i, m = choose_k_bits(n_values, positions, k, cell_generator(s))
        sel = rows == r
        assert torch.equal(idx[sel], i) and torch.equal(masks[sel], m), (r, k)
    assert (len(shorts) > 0) == (oversample == "none")


@pytest.mark.parametrize("n,k", [(10**9, 5_000), (3_000, 2_400), (40_000, 2_049)])
def test_the_tensor_sampler_keeps_the_first_k_distinct_draws(n, k):
    """Sequential sampling without replacement, by definition: i.i.d. draws from the
    generator in order (rounds of ``_oversample(need)``), repeats dropped, the first k distinct
    kept, returned sorted. A Python reference replays the same draws; (3,000, 2,400) needs
    several rounds, (40,000, 2,049) is just above the set-based path's limit."""
    import netperturb.perturb.faults.bits as bits
    from netperturb.core.seeds import cell_generator

    assert k > bits._SMALL_K
    for seed in range(3):
        g = cell_generator(seed)
        seen: dict[int, None] = {}
        while len(seen) < k:
            need = k - len(seen)
            for v in torch.randint(0, n, (bits._oversample(need),), generator=g, dtype=torch.int64).tolist():
                seen.setdefault(v)
        want = torch.tensor(sorted(list(seen)[:k]), dtype=torch.int64)
        got = bits._choose_sparse(n, k, cell_generator(seed))
        assert torch.equal(got, want)


def test_first_occurrences_and_combined_masks_by_definition():
    """``_first_occurrences``: the distinct values in the order they first appear;
    ``combine_masks``: each distinct index once, increasing, with the OR (= sum) of its masks,
    whether the indices come sorted (the samplers' order) or not."""
    import netperturb.perturb.faults.bits as bits
    from netperturb.core.seeds import cell_generator

    for seed in range(3):
        v = torch.randint(0, 50, (500,), generator=cell_generator(seed))
        first = bits._first_occurrences(v)
        assert v[first].tolist() == list(dict.fromkeys(v.tolist()))
        masks = torch.randint(1, 1 << 20, (500,), generator=cell_generator(seed))
        for values in (v, torch.sort(v).values):  # sorted (the samplers' order) or not
            uniq, ored = bits.combine_masks(values, masks)
            assert uniq.tolist() == sorted(set(values.tolist()))
            assert ored.tolist() == [int(masks[values == u].sum()) for u in uniq.tolist()]
