"""Counter-based draws (netperturb.perturb.draws): the bits, exact k-subsets, Gaussian noise."""

import math

import numpy as np
import pytest
import scipy.stats as st
import torch

from netperturb.core.seeds import cell_generator
from netperturb.perturb import draws as D
from netperturb.perturb.knockouts import NodeKnockout, SynapseKnockout
from netperturb.perturb.noise import GaussianNoise

M64 = (1 << 64) - 1


def splitmix64(key: int, i: int) -> int:
    """SplitMix64's i-th output from state ``key``, in Python integers (Steele et al. 2014)."""
    z = (key + (i + 1) * 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def test_the_first_output_of_splitmix64_from_state_zero_is_the_published_one():
    # the reference C implementation's first output for seed 0
    assert splitmix64(0, 0) == 0xE220A8397B1DCDAF


@pytest.mark.parametrize("key", [0, 1, 123456789012345, (1 << 62) - 1])
def test_keys_are_splitmix64_on_both_code_paths(key):
    n = 70_001  # more than one CPU chunk
    a = D.keys(key, n)
    b = D.keys(key, n, use_numpy=False)
    assert a.dtype == torch.int64 and a.shape == (n,) and (a >= 0).all()
    assert torch.equal(a, b)
    for i in (0, 1, 2, 65_535, 65_536, n - 1):
        assert int(a[i]) == splitmix64(key, i) >> 1


def reference_mask(key: int, n: int, k: int) -> torch.Tensor:
    """The definition: the k smallest keys, ties to the lower index (a full stable sort)."""
    m = torch.zeros(n, dtype=torch.bool)
    m[torch.sort(D.keys(key, n), stable=True).indices[:k]] = True
    return m


@pytest.mark.parametrize("n,k", [(1, 0), (1, 1), (7, 3), (100, 1), (100, 99), (70_001, 35_000), (200_003, 17)])
@pytest.mark.parametrize("use_numpy", [True, False])
def test_choose_mask_is_the_k_smallest_keys(n, k, use_numpy):
    m = D.choose_mask(n, k, 42, use_numpy=use_numpy)
    assert m.dtype == torch.bool and m.shape == (n,)
    assert int(m.sum()) == k
    assert torch.equal(m, reference_mask(42, n, k))


def test_choose_mask_edges_and_a_band_that_misses(monkeypatch):
    assert not D.choose_mask(10, 0, 1).any() and not D.choose_mask(10, -3, 1).any()
    assert D.choose_mask(10, 10, 1).all() and D.choose_mask(10, 12, 1).all()
    # a band that cannot hold the k-th key: the full sort gives the same subset
    monkeypatch.setattr(D, "_band", lambda n, k: (0, 1))
    for use_numpy in (True, False):
        assert torch.equal(D.choose_mask(5_000, 1_234, 9, use_numpy=use_numpy), reference_mask(9, 5_000, 1_234))


def test_draws_do_not_depend_on_the_chunk_size(monkeypatch):
    m, x = D.choose_mask(50_000, 20_000, 5), D.normal(5, (50_001,))
    monkeypatch.setattr(D, "_CHUNK", 1_000)
    monkeypatch.setattr(D, "_CHUNK_GPU", 777)
    for use_numpy in (True, False):
        assert torch.equal(D.choose_mask(50_000, 20_000, 5, use_numpy=use_numpy), m)
        assert torch.equal(D.normal(5, (50_001,), use_numpy=use_numpy), x)


def test_every_k_subset_is_equally_likely():
    # n = 5, k = 2: ten subsets; 20,000 keys -> about 2,000 each (chi-square, fixed keys: deterministic)
    counts = {}
    for key in range(20_000):
        s = tuple(torch.nonzero(D.choose_mask(5, 2, key * 7919 + 3)).squeeze(1).tolist())
        counts[s] = counts.get(s, 0) + 1
    assert len(counts) == 10
    assert st.chisquare(list(counts.values())).pvalue > 1e-3


def test_normal_is_standard_normal_and_the_same_on_both_code_paths():
    x = D.normal(2017, (1_001, 201))
    assert x.dtype == torch.float32 and x.shape == (1_001, 201)
    assert torch.equal(x, D.normal(2017, (1_001, 201), use_numpy=False))
    v = x.double().flatten().numpy()
    assert abs(v.mean()) < 4 / math.sqrt(v.size) and abs(v.std() - 1) < 4 / math.sqrt(2 * v.size)
    assert st.kstest(v, "norm").pvalue > 1e-3
    # element 2j and 2j + 1 are r cos t, r sin t of output j (hand-computed for j = 0)
    b = splitmix64(2017, 0)
    r = math.sqrt(-2 * math.log(((b >> 32) + 0.5) / 2**32))
    t = 2 * math.pi * (b & 0xFFFFFFFF) / 2**32
    assert x.flatten()[:2].tolist() == pytest.approx([r * math.cos(t), r * math.sin(t)], rel=1e-6)
    # neighbouring outputs are uncorrelated
    assert abs(np.corrcoef(v[:-1], v[1:])[0, 1]) < 4 / math.sqrt(v.size)


def test_perturbations_draw_one_stream_per_tensor_from_the_cell_generator():
    g = cell_generator(77)
    kw, kb = D.stream_key(g), D.stream_key(g)
    w, b = torch.randn(30, 40) + 5, torch.randn(30) + 5
    out = SynapseKnockout()({"weight": w, "bias": b}, 0.3, cell_generator(77))
    assert torch.equal(out["weight"] == 0, D.choose_mask(1200, 360, kw).view(30, 40))
    assert torch.equal(out["bias"] == 0, D.choose_mask(30, 9, kb))
    node = NodeKnockout()({"weight": w, "bias": b}, 0.5, cell_generator(77))
    assert torch.equal((node["weight"] == 0).all(1), D.choose_mask(30, 15, kw))
    noisy = GaussianNoise()({"weight": w, "bias": b}, 0.5, cell_generator(77))
    std = w.double().std(unbiased=False).item()
    assert torch.equal(noisy["weight"], w + D.normal(kw, (30, 40)) * (0.5 * std))
