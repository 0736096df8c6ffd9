"""Evaluation data as a stream (netperturb.core.stream): in-memory tensors, DataLoaders and
Datasets give the engines the same numbers as the workflow's uint8 shards, bit for bit; data
that does not fit in memory is read again instead of cached; bad data is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ConvBNNet, randomise_bn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from netperturb.core.evaluate import evaluate, evaluate_stream
from netperturb.core.layers import find_layers
from netperturb.core.preprocess import Preprocess
from netperturb.core.stream import LoaderStream, TensorStream, as_stream
from netperturb.models.loaded import LoadedModel
from netperturb.perturb.engine.runners import FastPlan, run_fast
from netperturb.perturb.grid import LayerJob, run_layer_job
from netperturb.perturb.registry import make_perturbation

PRE = Preprocess(scale=1 / 255, mean=(0.45,), std=(0.22,), size=None)
N = 45


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = randomise_bn(ConvBNNet()).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (N, 1, 10, 10), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        y = model(PRE(x)).argmax(1)
    y[::4] = torch.randint(0, 10, (len(y[::4]),), generator=g)  # some wrong, so SDC and accuracy both move
    return LoadedModel(model=model, preprocess=PRE, arch="convbn", weights="random", meta={}), x, y


class Chunks(IterableDataset):
    """An iterable dataset of unknown length (a stream that cannot be sized before it is read)."""

    def __init__(self, x, y, size):
        self.x, self.y, self.size = x, y, size

    def __iter__(self):
        for s in range(0, len(self.y), self.size):
            yield self.x[s : s + self.size], self.y[s : s + self.size]


def _job(loaded, path, name, levels, **opts):
    layer = {l.path: l for l in find_layers(loaded.model)}[path]
    return LayerJob(study="t", dataset="d", model="m", layer=layer, perturbation=make_perturbation(name, **opts),
                    levels=levels, repeats=2, study_seed=3)  # fmt: skip


CASES = {
    "synapse": ("features.0", "synapse_knockout", [0.0, 0.4, 1.0], {}),
    "node": ("features.3", "node_knockout", [0.0, 0.5], {}),
    "noise": ("classifier.0", "gaussian_noise", [0.0, 1.0], {}),
    "bit_flip": ("features.3", "bit_flip", [0.0, 0.01], {"bits": "exponent"}),
    "activation": ("features.0", "activation_bit_flip", [0.0, 0.02], {"transient": True}),
}
CELLS = ["seed", "n_images", "top1", "top5", "loss", "sdc1", "sdc5", "due"]


def _same(got, ref, loss_rel=0.0):
    for col in CELLS:
        a, b = got[col].to_numpy(dtype=float), ref[col].to_numpy(dtype=float)
        if col == "loss" and loss_rel:
            assert a == pytest.approx(b, rel=loss_rel, nan_ok=True), col
        else:
            assert ((a == b) | (np.isnan(a) & np.isnan(b))).all(), (col, a, b)


@pytest.mark.parametrize("case", list(CASES))
def test_dataloader_and_dataset_give_the_shard_numbers_bit_for_bit(setup, case):
    """The workflow's path (uint8 tensors, batch 16) against a DataLoader of the same batches
    (bit for bit, every column) and a Dataset read in batches of 10 (exact counts, so the same
    accuracies and SDC; the per-image losses may differ in the last bits with the batch size,
    as between the workflow's own batch sizes), on every engine. Transient activation faults
    draw per image index, the same in every split."""
    loaded, x, y = setup
    path, name, levels, opts = CASES[case]
    job = _job(loaded, path, name, levels, **opts)
    ref = run_layer_job(job, loaded, x, y, batch_size=16, progress=False, engine="naive")
    assert ref["top1"].nunique() > 1  # the perturbation moves the numbers: the comparison is not vacuous
    for engine in ("naive", "functional", "fast"):
        want = run_layer_job(job, loaded, x, y, batch_size=16, progress=False, engine=engine)
        _same(want, ref, loss_rel=1e-5)  # the engines agree (as tests/perturb/test_engine.py checks)
        loader = DataLoader(TensorDataset(x, y), batch_size=16)
        _same(run_layer_job(job, loaded, loader, batch_size=999, progress=False, engine=engine), want)
        dataset = run_layer_job(job, loaded, TensorDataset(x, y), batch_size=10, progress=False, engine=engine)
        _same(dataset, want, loss_rel=1e-6)


def test_streamed_prefix_is_recomputed_when_it_does_not_fit(setup):
    """No memory for the prefix cache (or a stream of unknown length): the source is read once
    per group of replicas, with the same numbers as the cached path."""
    loaded, x, y = setup
    job = _job(loaded, "features.3", "synapse_knockout", [0.0, 0.3, 0.6])
    cached, tight, unknown = FastPlan(), FastPlan(), FastPlan()
    want = run_fast(job, loaded.model, x, y, PRE, batch_size=16, max_replicas=2, progress=False, plan=cached)
    got = run_fast(job, loaded.model, x, y, PRE, batch_size=16, max_replicas=2, progress=False, plan=tight,
                   memory_fraction=1e-12)  # fmt: skip
    stream = LoaderStream(DataLoader(Chunks(x, y, 9), batch_size=None), PRE)
    assert stream.n is None
    got_unknown = run_fast(job, loaded.model, stream, max_replicas=2, progress=False, plan=unknown)
    # the same batches of 9 from memory (a logit's last bits may depend on the batch size)
    want9 = run_fast(job, loaded.model, x, y, PRE, batch_size=9, max_replicas=2, progress=False)
    assert cached.cached_prefix and not tight.cached_prefix and not unknown.cached_prefix
    assert got == want and got_unknown == want9
    assert [c.top1 for c in got_unknown] == [c.top1 for c in want]


def test_evaluate_stream_equals_evaluate(setup):
    loaded, x, y = setup
    want = evaluate(loaded.model, x, y, PRE, batch_size=11)
    assert evaluate_stream(loaded.model, as_stream(DataLoader(TensorDataset(x, y), batch_size=11), preprocess=PRE)) == want
    assert evaluate_stream(loaded.model, TensorStream(PRE(x), y, batch_size=11)) == want
    other = evaluate_stream(loaded.model, as_stream(TensorDataset(x, y), preprocess=PRE, batch_size=4))
    assert (other.top1, other.top5, other.sdc1, other.n) == (want.top1, want.top5, want.sdc1, want.n)


def test_batches_and_indices(setup):
    _, x, y = setup
    s = TensorStream(x, y, PRE, batch_size=20)
    batches = list(s.batches("cpu"))
    assert [b.start for b in batches] == [0, 20, 40] and [len(b.y) for b in batches] == [20, 20, 5]
    assert torch.equal(torch.cat([b.x for b in batches]), PRE(x)) and s.n == N
    assert torch.equal(s.head("cpu", 2), PRE(x[:2]))
    ls = as_stream(DataLoader(TensorDataset(x, y), batch_size=10, drop_last=True), preprocess=PRE)
    assert ls.n == 40 and [b.start for b in ls.batches("cpu")] == [0, 10, 20, 30]
    assert as_stream(TensorDataset(x, y), preprocess=PRE, batch_size=8).n == N
    assert s.fingerprint() == TensorStream(x.clone(), y.clone(), PRE, batch_size=20).fingerprint()
    assert s.fingerprint() != TensorStream(x.flip(0), y.flip(0), PRE, batch_size=20).fingerprint()


def test_bad_data_is_refused_by_name(setup):
    _, x, y = setup
    with pytest.raises(ValueError, match="uint8 images need preprocess="):
        as_stream((x, y))
    with pytest.raises(ValueError, match="uint8 images need preprocess="):
        list(as_stream(DataLoader(TensorDataset(x, y), batch_size=5)).batches("cpu"))
    with pytest.raises(ValueError, match="shuffle=True"):
        as_stream(DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True))
    with pytest.raises(ValueError, match="labels must be integer"):
        as_stream((x.float(), y.float()))
    with pytest.raises(ValueError, match=r"x must be \(N, ...\) and y \(N,\)"):
        as_stream((x, y[:-1]), preprocess=PRE)
    with pytest.raises(TypeError, match="a str is not evaluation data"):
        as_stream("images/")
    with pytest.raises(ValueError, match="each batch must be"):
        list(as_stream(DataLoader([{"x": 1}], batch_size=None)).batches("cpu"))
