"""The public API (``import netperturb as npt``): layers, perturbed (in place, restored bit for
bit, the grid engine's draw), evaluate (SDC / DUE against a reference), run_grid (the
workflow's seeds and columns; fast = naive), in_format (a format fault never silently changes
every weight), resume."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ConvBNNet, randomise_bn
from torch.utils.data import DataLoader, TensorDataset

import netperturb as npt
from netperturb.core.layers import LayerSelectionError
from netperturb.core.resume import partial_path
from netperturb.core.seeds import cell_generator
from netperturb.perturb.grid import COLUMNS, layer_params
from netperturb.perturb.registry import make_perturbation

N = 60


@pytest.fixture(scope="module")
def net_data():
    """A ConvBN net on float 1 x 10 x 10 inputs, labels mostly its own predictions."""
    torch.manual_seed(0)
    model = randomise_bn(ConvBNNet()).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(N, 1, 10, 10, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::5] = torch.randint(0, 10, (len(y[::5]),), generator=g)
    return model, x, y, DataLoader(TensorDataset(x, y), batch_size=16)


def _state_bytes(model):
    return {k: v.detach().clone().view(torch.uint8) if v.dtype.is_floating_point else v.clone() for k, v in model.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_top_level_names_and_layers(net_data):
    model = net_data[0]
    assert set(npt.__all__) >= {"layers", "perturbed", "evaluate", "run_grid", "in_format", "layer_table", "plot_grid"}
    found = npt.layers(model)
    assert [l.path for l in found] == ["features.0", "features.3", "classifier.0", "classifier.2"]
    assert [l.label for l in found] == ["conv1", "conv2", "fc3", "fc4"]
    for l in found:
        m = model.get_submodule(l.path)
        assert l.n_params == m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
    table = npt.layer_table(model)
    assert table["n_params"].tolist() == [l.n_params for l in found]
    bn = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("features.1", "features.4")))
    assert table["share"].sum() == pytest.approx(1 - bn / sum(p.numel() for p in model.parameters()))


@pytest.mark.parametrize("name, level, opts", [
    ("synapse_knockout", 0.5, {}), ("node_knockout", 0.5, {}), ("gaussian_noise", 1.0, {}),
    ("bit_flip", 0.01, {"bits": "exponent"}), ("stuck_at", 0.02, {"value": 1}),
])  # fmt: skip
def test_perturbed_applies_the_cells_draw_and_restores_bit_for_bit(net_data, name, level, opts):
    model = net_data[0]
    before = _state_bytes(model)
    info = npt.layers(model)[1]
    want = make_perturbation(name, **opts)(layer_params(model, info), level, cell_generator(123))
    with npt.perturbed(model, "conv2", name, level, seed=123, **opts) as applied:
        params = layer_params(model, info)
        assert set(applied.changed) == set(want) and applied.changed["weight"] > 0
        for role, t in want.items():
            assert torch.equal(params[role], t), role
        assert not _same_state(_state_bytes(model), before)
    assert _same_state(_state_bytes(model), before)
    with pytest.raises(RuntimeError, match="boom"):
        with npt.perturbed(model, "features.3", name, level, seed=5, **opts):
            raise RuntimeError("boom")
    assert _same_state(_state_bytes(model), before)
    with npt.perturbed(model, "conv2", name, 0.0, seed=123, **opts) as applied:  # level 0: the clean network
        assert applied.changed == {} and _same_state(_state_bytes(model), before)


def test_synapse_knockout_count_in_place(net_data):
    model = net_data[0]
    w = model.features[3].weight
    with npt.perturbed(model, "features.3", "synapse_knockout", 0.3, seed=1) as applied:
        assert int((w == 0).sum()) == math.floor(0.3 * w.numel()) == applied.changed["weight"]


def test_perturbed_evaluate_equals_the_grid_row(net_data):
    """perturbed + evaluate with the row's seed gives the row of run_grid: every column of the
    naive reference engine exactly, the fast engine's counts exactly (top-1, top-5, SDC, DUE)."""
    model, x, y, loader = net_data
    perts = {"synapse_knockout": {"levels": [0.0, 0.5]}, "bit_flip": {"levels": [0.02], "bits": "exponent"},
             "activation_noise": {"levels": [0.5], "transient": True}}  # fmt: skip
    naive = npt.run_grid(model, loader, layers=["conv2", "fc3"], perturbations=perts, repeats=2, seed=11, engine="naive")
    fast = npt.run_grid(model, (x, y), layers=["conv2", "fc3"], perturbations=perts, repeats=2, seed=11, batch_size=16)
    assert list(naive.columns) == COLUMNS and len(naive) == 2 * 4 * 2
    for col in ("seed", "top1", "top5", "sdc1", "sdc5", "due", "n_images"):
        assert fast[col].tolist() == naive[col].tolist(), col
    assert fast["loss"].to_numpy() == pytest.approx(naive["loss"].to_numpy(), rel=1e-5, nan_ok=True)
    clean = npt.evaluate(model, loader)
    for _, row in naive.iterrows():
        opts = {k: v for k, v in perts[row.perturbation].items() if k != "levels"}
        with npt.perturbed(model, row.layer, row.perturbation, row.level, seed=row.seed, **opts):
            m = npt.evaluate(model, loader, reference=clean)
        got = m.as_dict()
        for col in ("n_images", "top1", "top5", "loss", "sdc1", "sdc5", "due"):
            assert got[col] == row[col] or (math.isnan(got[col]) and math.isnan(row[col])), (row.layer, row.perturbation, col)
    assert (naive["top1"] != clean.top1).any()  # the cells are not all the clean network


def test_run_grid_seeds_levels_and_errors(net_data):
    model, x, y, loader = net_data
    df = npt.run_grid(model, loader, layers=["fc*"], perturbations={"gaussian_noise": {"levels": [0, 2.0]}}, repeats=3,
                      seed=2017, model_name="mine")  # fmt: skip
    assert df["layer"].unique().tolist() == ["classifier.0", "classifier.2"]
    want = [npt.cell_seed(2017, "mine", r.layer, "gaussian_noise", r.level, r.repeat) for r in df.itertuples()]
    assert df["seed"].tolist() == want
    clean = npt.evaluate(model, loader)
    zero = df[df["level"] == 0]
    assert (zero["top1"] == clean.top1).all() and (zero["loss"] == clean.loss).all() and (zero["sdc1"] == 0).all()
    assert df["weights"].nunique() == 1 and df["arch"].iloc[0] == "ConvBNNet"
    with pytest.raises(ValueError, match=r"perturbations.gaussian_noise: a mapping with levels"):
        npt.run_grid(model, loader, perturbations={"gaussian_noise": [0, 1]})
    with pytest.raises(ValueError, match=r"perturbations.knock: unknown perturbation 'knock'"):
        npt.run_grid(model, loader, perturbations={"knock": {"levels": [0]}})
    with pytest.raises(ValueError, match=r"perturbations.synapse_knockout.levels"):
        npt.run_grid(model, loader, perturbations={"synapse_knockout": {"levels": [2.0]}})
    with pytest.raises(LayerSelectionError, match="conv9"):
        npt.run_grid(model, loader, layers=["conv9"], perturbations={"synapse_knockout": {"levels": [0]}})
    model.train()
    try:
        with pytest.raises(ValueError, match=r"model.eval\(\)"):
            npt.run_grid(model, loader, perturbations={"synapse_knockout": {"levels": [0]}})
        with pytest.raises(ValueError, match=r"model.eval\(\)"):
            npt.evaluate(model, loader)
    finally:
        model.eval()


def test_evaluate_references_agree_and_are_checked(net_data):
    model, x, y, loader = net_data
    clean = npt.evaluate(model, loader)
    assert clean.n_images == N and math.isnan(clean.sdc1) and clean.due == 0
    assert clean.top1 == pytest.approx(float((model(x).argmax(1) == y).float().mean()))
    with torch.no_grad():
        logits = model(x)
    ref_model = randomise_bn(ConvBNNet()).eval()
    ref_model.load_state_dict(model.state_dict())
    with npt.perturbed(model, "conv1", "node_knockout", 0.5, seed=3):
        by_metrics = npt.evaluate(model, loader, reference=clean)
        by_model = npt.evaluate(model, loader, reference=ref_model)
        by_logits = npt.evaluate(model, (x, y), reference=logits, batch_size=7)
        with pytest.raises(ValueError, match="the model itself is perturbed"):
            npt.evaluate(model, loader, reference=model)
        with pytest.raises(ValueError, match="covers 60 images, the data has 30"):
            npt.evaluate(model, (x[:30], y[:30]), reference=clean)
    assert 0 < by_metrics.sdc1 < 1
    for other in (by_model, by_logits):
        assert (other.top1, other.top5, other.sdc1, other.sdc5, other.due) == (
            by_metrics.top1, by_metrics.top5, by_metrics.sdc1, by_metrics.sdc5, by_metrics.due)
    # SDC by definition: images the clean net gets right (unique top-1) whose top-1 changes
    with torch.no_grad(), npt.perturbed(model, "conv1", "node_knockout", 0.5, seed=3):
        faulty = model(x).argmax(1)
    right = clean.top1_correct
    assert by_metrics.sdc1 == pytest.approx(float((faulty[right] != y[right]).float().mean()))
    with pytest.raises(ValueError, match="device='meta'"):
        npt.evaluate(model, loader, device="meta")
    with pytest.raises(TypeError, match="pass a Metrics"):
        npt.evaluate(model, loader, reference="clean.csv")


def test_a_format_fault_never_silently_changes_every_weight(net_data):
    """bit_flip(format="int8") on an fp32 layer raises (naming the format and the remedy);
    on in_format(model, "int8") it acts on the stored codes: level 0 changes nothing, and its
    numbers are run_grid's for the same cell (which converts as the faults study does)."""
    model, x, y, loader = net_data
    before = _state_bytes(model)
    with pytest.raises(npt.FormatError, match=r"not stored in int8.*in_format\(model, 'int8', granularity='tensor'\)"):
        with npt.perturbed(model, "conv2", "bit_flip", 1e-6, seed=1, format="int8"):
            pass
    with pytest.raises(npt.FormatError, match="not stored in fp16"):
        with npt.perturbed(model, "fc3", "stuck_at", 1e-3, seed=1, format="fp16"):
            pass
    assert _same_state(_state_bytes(model), before)
    ref = npt.in_format(model, "int8", granularity="channel")
    assert npt.in_format(model, "fp32") is model
    w = model.features[3].weight
    assert (ref.features[3].weight != w).float().mean() > 0.9  # storing in int8 changes nearly every weight
    with npt.perturbed(ref, "conv2", "bit_flip", 0.0, seed=1, format="int8", granularity="channel") as a:
        assert a.changed == {}
    tiny = 1e-9  # a rate that flips no bit of the layer (4e-5 flips expected) changes no weight
    with npt.perturbed(ref, "conv2", "bit_flip", tiny, seed=1, format="int8", granularity="channel") as a:
        assert a.changed == {"weight": 0}
    clean = npt.evaluate(ref, loader)
    with npt.perturbed(ref, "conv2", "bit_flip", 0.01, seed=9, format="int8", granularity="channel") as a:
        n = w.numel()
        assert 0 < a.changed["weight"] <= math.floor(0.01 * n * 8)  # only the stored codes hit by a flip change
        hit = npt.evaluate(ref, loader, reference=clean)
    df = npt.run_grid(model, loader, layers=["conv2"], repeats=1, seed=4, engine="naive",
                      perturbations={"bf8": {"perturbation": "bit_flip", "format": "int8", "granularity": "channel",
                                             "levels": [0.0, 0.01]}})  # fmt: skip
    assert df["perturbation"].tolist() == ["bf8", "bf8"]
    none = npt.run_grid(model, loader, layers=["conv2"], repeats=1, seed=4, engine="naive",
                        perturbations={"bf8": {"perturbation": "bit_flip", "format": "int8", "granularity": "channel",
                                               "levels": [0.0, tiny]}})  # fmt: skip
    assert none["top1"].tolist() == [clean.top1] * 2 and none["sdc1"].tolist() == [0.0, 0.0]
    assert df.iloc[0]["top1"] == clean.top1  # level 0 is the int8 network, not the fp32 one
    seed = df.iloc[1]["seed"]
    with npt.perturbed(ref, "conv2", "bit_flip", 0.01, seed=int(seed), format="int8", granularity="channel"):
        cell = npt.evaluate(ref, loader, reference=clean)
    assert (cell.top1, cell.sdc1, cell.loss) == (df.iloc[1]["top1"], df.iloc[1]["sdc1"], df.iloc[1]["loss"])
    assert hit.n_images == N


def test_activation_fault_hook_is_removed(net_data):
    model, x, y, loader = net_data
    module = model.get_submodule("features.1")  # conv1's BatchNorm: the layer's output
    with torch.no_grad():
        clean = model(x)
    with npt.perturbed(model, "conv1", "activation_bit_flip", 0.05, seed=2, bits="exponent") as a:
        assert len(module._forward_hooks) == 1 and a.changed == {}
        with torch.no_grad():
            assert not torch.equal(model(x), clean)
    assert len(module._forward_hooks) == 0
    with torch.no_grad():
        assert torch.equal(model(x), clean)


def test_run_grid_resumes_after_an_interruption(net_data, tmp_path, monkeypatch, caplog):
    model, x, y, loader = net_data
    kw = dict(layers=["conv1", "conv2"], perturbations={"synapse_knockout": {"levels": [0, 0.5]}}, repeats=2, seed=3)
    want = npt.run_grid(model, loader, **kw)
    out = tmp_path / "grid.csv"
    import netperturb.perturb.grid as grid

    real, calls = grid.run_layer_job, []

    def stop_after_one(*a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(grid, "run_layer_job", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        npt.run_grid(model, loader, resume=out, **kw)
    monkeypatch.setattr(grid, "run_layer_job", real)
    assert partial_path(out).exists() and not out.exists()
    with caplog.at_level(logging.INFO, logger="netperturb"):
        got = npt.run_grid(model, loader, resume=out, **kw)
    assert "4 finished cells found" in caplog.text
    pd.testing.assert_frame_equal(got, want)
    assert not partial_path(out).exists()
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(out), check_dtype=False)
    assert np.array_equal(pd.read_csv(out)["top1"].to_numpy(), want["top1"].to_numpy())
