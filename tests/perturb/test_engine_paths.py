"""Which path the fast engine takes (graph split, hook path, functional) and that each gives
the naive loop's numbers bit for bit: Conv1d / Conv3d with their BatchNorms, an attention's
in_proj and out_proj, a model torch.fx cannot trace, and one neither path can cut."""

import logging

import pytest
import torch
from conftest import randomise_bn
from torch import nn

from netperturb.core.layers import find_layers
from netperturb.models.loaded import LoadedModel
from netperturb.perturb.engine.graph import split_at_layer, trace_model
from netperturb.perturb.engine.hooks import HookError, find_split, split_by_hooks
from netperturb.perturb.engine.runners import FastPlan, run_cells, run_fast
from netperturb.perturb.grid import LayerJob
from netperturb.perturb.registry import make_perturbation

CASES = [("gaussian_noise", 1.0), ("node_knockout", 0.5), ("synapse_knockout", 0.5)]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def to_signal(x):
    """uint8 (B, 2, 16) -> float model input."""
    return x.float() / 64 - 2


class Signals(nn.Module):
    """Conv1d -> BN1d, depthwise Conv1d, Conv3d -> BN3d, self-attention, cross-attention
    (two batch inputs), Linear -> BN1d."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(8)
        self.dw = nn.Conv1d(8, 8, 3, padding=1, groups=8, bias=False)
        self.c3 = nn.Conv3d(1, 4, 3, padding=1)
        self.bn3 = nn.BatchNorm3d(4)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.cross = nn.MultiheadAttention(8, 2, kdim=4, vdim=4, batch_first=True)
        self.fc = nn.Linear(8, 6)
        self.bnf = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 5)

    def forward(self, x):  # (B, 2, 16)
        s = self.dw(torch.relu(self.bn1(self.c1(x))))
        kv = self.bn3(self.c3(x.reshape(x.shape[0], 1, 2, 4, 4))).flatten(2).transpose(1, 2)  # (B, 32, 4)
        t = s.transpose(1, 2)  # (B, 16, 8)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        t = t + self.cross(t, kv, kv, need_weights=False)[0]
        return self.head(torch.relu(self.bnf(self.fc(t.mean(1)))))


class Gated(nn.Module):
    """Data-dependent control flow (torch.fx cannot trace it), a conv with BatchNorm, a
    depthwise conv on a residual branch, self-attention and a dense head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        if x.mean() > 0:  # a Python branch on a value: torch.fx raises TraceError
            x = x + self.dw(x)
        t = x.flatten(2).transpose(1, 2)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return self.head(t.mean(1))


class SeqFirst(nn.Module):
    """An attention with the sequence on dim 0 (batch_first=False): no value after the stem
    has the batch on dim 0, so neither path can cut the network there."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(16, 8)
        self.attn = nn.MultiheadAttention(8, 2)
        self.head = nn.Linear(8, 5)

    def forward(self, x):  # (B, 2, 16)
        t = self.stem(x).transpose(0, 1)  # (2, B, 8)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return self.head(t.mean(0))


def loaded(cls, preprocess=to_signal):
    torch.manual_seed(0)
    return LoadedModel(randomise_bn(cls()).eval().requires_grad_(False), preprocess, cls.__name__.lower(), "random", {})


def data(shape, n=7, classes=5):
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g), torch.randint(0, classes, (n,), generator=g)


def compare(lm, x, y, layer, name, level, caplog, **kw):
    job = LayerJob(study="t", dataset="r", model=lm.arch, layer=layer, perturbation=make_perturbation(name),
                   levels=[0.0, level], repeats=2, study_seed=11)  # fmt: skip
    plan = FastPlan()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="netperturb"):
        fast = run_fast(job, lm.model, x, y, lm.preprocess, batch_size=3, max_replicas=3, progress=False, plan=plan, **kw)
    naive = run_cells(job, lm, x, y, engine="naive", batch_size=3, progress=False)
    assert fast == naive, (layer.path, name, plan)
    assert naive[2].loss_sum != naive[0].loss_sum, (layer.path, name)  # the perturbation is felt
    return plan


EXPECTED_SIGNALS = {"c1": "graph", "dw": "graph", "c3": "graph", "attn.in_proj": "graph", "attn.out_proj": "graph",
                    "cross.q_proj": "functional", "cross.k_proj": "functional", "fc": "graph", "head": "graph"}  # fmt: skip


def test_conv1d_conv3d_batchnorms_and_attention_split_exactly(caplog):
    lm = loaded(Signals)
    x, y = data((2, 16))
    layers = {l.path: l for l in find_layers(lm.model)}
    for i, (path, how) in enumerate(EXPECTED_SIGNALS.items()):
        name, level = CASES[i % 3]
        plan = compare(lm, x, y, layers[path], name, level, caplog)
        assert plan.path == how, (path, plan.fallback)
        if how == "functional":  # the cross-attention reads two batch values
            assert "graph split: " in plan.fallback and "reads 2 batch values" in plan.fallback
            assert "hook path: " in plan.fallback and "takes 2 tensors" in plan.fallback
            assert "using the functional engine" in caplog.text
        else:
            assert "graph split (torch.fx)" in caplog.text
    # node knockout with the BatchNorm in the unit reuses the clean layer output
    plan = compare(lm, x, y, layers["c3"], "node_knockout", 0.5, caplog)
    assert plan.reuse_clean_unit


def test_the_attention_is_the_unit_of_its_in_proj_and_out_proj():
    lm = loaded(Signals)
    x = to_signal(data((2, 16))[0][:2])
    layers = {l.path: l for l in find_layers(lm.model)}
    for path in ("attn.in_proj", "attn.out_proj"):
        split = split_at_layer(lm.model, layers[path], x)
        assert split.host is not None and split.channel_dim is None and split.module is lm.model.get_submodule(path.replace(".in_proj", ""))
        assert torch.equal(split.forward(x), lm.model(x))
    split = split_at_layer(lm.model, layers["c1"], x)
    assert split.host is None and split.bn is lm.model.bn1 and split.channel_dim == 1


def test_a_model_torch_fx_cannot_trace_takes_the_hook_path(caplog):
    lm = loaded(Gated, preprocess=lambda x: x.float() / 128 - 1)
    x, y = data((3, 6, 6))
    layers = find_layers(lm.model)
    assert [(l.path, l.bn) for l in layers][:2] == [("stem", "bn"), ("dw", None)]  # BN found by adjacency
    for i, layer in enumerate(layers):
        for name, level in CASES[i % 3 :] + CASES[: i % 3][:1]:
            plan = compare(lm, x, y, layer, name, level, caplog)
            assert plan.path == "hooks", plan
            assert "hook path (the model does not split with torch.fx)" in caplog.text
            assert "the model does not trace with torch.fx (TraceError" in caplog.text


def test_the_hook_split_caches_the_calls_before_the_layer_and_stops_there():
    lm = loaded(Gated, preprocess=lambda x: x.float() / 128 - 1)
    inp = lm.preprocess(data((3, 6, 6))[0][:2])
    layer = {l.path: l for l in find_layers(lm.model)}["attn.in_proj"]
    split = split_by_hooks(lm.model, layer, inp)
    m = lm.model
    # the top-level calls before the attention: stem, bn, dw (the first call of each)
    assert [(mod, i) for mod, i in split.slots] == [(m.stem, 0), (m.bn, 0), (m.dw, 0)]
    calls = []
    handle = m.head.register_forward_hook(lambda *a: calls.append(1))
    try:
        live = split.prefix(inp)
    finally:
        handle.remove()
    assert calls == []  # the prefix pass stopped at the attention
    assert len(live) == 5 and live[0] is inp and live[1].shape == (2, 36, 8)
    assert torch.equal(live[2], m.stem(inp)) and torch.equal(live[4], m.dw(torch.relu(m.bn(m.stem(inp)))))
    assert torch.equal(split.forward(inp), m(inp))
    assert "forward" not in vars(m.stem) and "forward" not in vars(m.attn)  # every replaced forward restored


def test_neither_path_cuts_a_sequence_first_attention_and_the_functional_engine_runs(caplog):
    lm = loaded(SeqFirst)
    x, y = data((2, 16))
    layers = {l.path: l for l in find_layers(lm.model)}
    plan = compare(lm, x, y, layers["attn.in_proj"], "gaussian_noise", 1.0, caplog)
    assert plan.path == "functional"
    assert "has no batch dimension" in plan.fallback and "hook path" in plan.fallback
    with pytest.raises(HookError, match="input of attn has no batch dimension"):
        split_by_hooks(lm.model, layers["attn.in_proj"], to_signal(x[:2]))
    with pytest.raises(ValueError, match="path 'magic' unknown"):
        find_split(lm.model, layers["head"], to_signal(x[:2]), path="magic")


def test_arguments_with_defaults_are_fixed_when_tracing():
    """timm's ViT forward is ``forward(x, attn_mask=None, is_causal=False)``: a graph of 3
    inputs ('the model takes 3 inputs, expected 1') until the defaults are fixed."""

    class Defaults(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x, mask=None, causal=False):
            if mask is not None or causal:
                x = x * 0
            return self.fc(x)

    model = Defaults().eval()
    gm = trace_model(model)
    assert [n.op for n in gm.graph.nodes].count("placeholder") == 1
    x = torch.randn(2, 4)
    assert torch.equal(gm(x), model(x))
    split = split_at_layer(model, find_layers(model)[0], x)
    assert torch.equal(split.forward(x), model(x))


@pytest.mark.parametrize("path, match", [("attn.in_proj", "has none of its own"), ("attn.out_proj", "never called")])
@pytest.mark.parametrize("engine", ["fast", "naive"])
def test_an_activation_fault_on_a_layer_without_an_output_of_its_own_is_an_error(path, match, engine):
    """The attention computes q, k, v and reads out_proj's weights inside its own forward: a
    hook on them would never run and the fault would silently change nothing."""
    lm = loaded(Signals)
    x, y = data((2, 16))
    layer = {l.path: l for l in find_layers(lm.model)}[path]
    job = LayerJob(study="t", dataset="r", model="signals", layer=layer, perturbation=make_perturbation("activation_bit_flip"),
                   levels=[0.0, 1e-3], repeats=1, study_seed=1)  # fmt: skip
    with pytest.raises(ValueError, match=f"layer {path}: .*{match}"):
        run_cells(job, lm, x, y, engine=engine, batch_size=4, progress=False)


class ByFunction(nn.Module):
    """A layer whose module is never called: its weights are passed to a function (as
    torchvision Swin passes ``attn.qkv.weight`` to ``shifted_window_attention``)."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):  # (B, 2, 16)
        t = x.reshape(x.shape[0], 4, 8)
        t = torch.relu(nn.functional.linear(t, self.qkv.weight, self.qkv.bias)) + t
        return self.head(t.mean(1))


def test_a_layer_whose_weights_a_function_reads_has_that_call_as_its_unit(caplog):
    lm = loaded(ByFunction)
    x, y = data((2, 16))
    layer = find_layers(lm.model)[0]
    split = split_at_layer(lm.model, layer, to_signal(x[:2]))
    assert split.host is not None and split.names == {"weight": "qkv.weight", "bias": "qkv.bias"}
    for path, how in (("auto", "graph"), ("hooks", "hooks")):  # hooks: the model itself is the nearest call
        for name, level in CASES[:2]:
            assert compare(lm, x, y, layer, name, level, caplog, path=path).path == how
