"""Models from anywhere (issue 23, point 2): python factories with a state_dict (.pt or
.safetensors), TorchScript and torch.export files, timm; each checked against its data before
a job runs (the 0-255 PNG case), each giving exactly the numbers of the same network in eager
PyTorch."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
import torch
from torch import nn

from netperturb.core.config import ConfigError
from netperturb.core.context import RunContext
from netperturb.core.evaluate import evaluate
from netperturb.core.io import sha256_file
from netperturb.core.layers import find_layers
from netperturb.core.preprocess import Preprocess
from netperturb.datasets.shards import load_split, read_manifest
from netperturb.datasets.sources import plan_data, prepare_data_source
from netperturb.models.digests import FileChangedError, check_unchanged
from netperturb.models.expects import InputMismatchError
from netperturb.models.external import ModelFileError, load_external, sniff_model_file
from netperturb.models.graphs import modularise
from netperturb.models.sources import parse_model_spec
from netperturb.studies.cheney2017 import jobs as cheney
from netperturb.studies.faults import jobs as faults
from source_files import REPO, mynet_files, png_folder

SPECS = {
    "pt": {"source": "python", "factory": f"{REPO}/examples/mynet.py:make_mynet", "kwargs": {"in_channels": 1}},
    "safetensors": {"source": "python", "factory": "examples.mynet:make_mynet", "kwargs": {"in_channels": 1}},
    "torchscript": {"source": "torchscript"},
    "exported": {"source": "exported"},
}


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    """60 digits as 0-255 PNGs in class folders (evaluation only), decoded to shards."""
    root = tmp_path_factory.mktemp("folder")
    png_folder(root / "digits", {"": list(range(1000, 1060))})
    plan = plan_data({"dataset": {"kind": "image_folder", "root": str(root / "digits"), "channels": 1}})
    shards = root / "shards"
    prepare_data_source(shards, plan.spec)
    return plan, shards


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return mynet_files(tmp_path_factory.mktemp("mynet"))


def _planned(kind: str, files):
    spec = dict(SPECS[kind])
    spec["weights_file" if spec["source"] == "python" else "file"] = str(files[kind])
    return parse_model_spec("m", spec, num_classes=10, in_channels=1)


def _ctx(planned, shards, **kw) -> RunContext:
    return RunContext(run="t", dataset="digits", shard_dir=str(shards), model="m", model_file=planned.path,
                      source=planned.load, batch_size=25, device="cpu", progress=False, study_seed=3, **kw)  # fmt: skip


def test_every_file_source_gives_the_eager_numbers(folder_data, files, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # examples.mynet:make_mynet is importable from the repository's root
    plan, shards = folder_data
    images, labels = load_split(shards, "test")
    manifest = read_manifest(shards)
    eager = torch.load(files["pt"], weights_only=True)
    ref_model = __import__("examples.mynet", fromlist=["x"]).make_mynet(10, 1)
    ref_model.load_state_dict(eager)
    ref_model.eval()
    pre = Preprocess(scale=1 / 255, mean=tuple(manifest["preprocess"]["mean"]), std=tuple(manifest["preprocess"]["std"]))
    clean = evaluate(ref_model, images, labels, pre, batch_size=25).metrics()
    tables = {}
    for kind in SPECS:
        planned = _planned(kind, files)
        ctx = _ctx(planned, shards)
        base = cheney.baseline(ctx, tmp_path / f"{kind}-base.csv")
        grid = cheney.perturb_layer(ctx, tmp_path / f"{kind}.csv", layer="features.0", perturbation="node_knockout",
                                    options={"levels": [0.0, 0.5]}, repeats=2)  # fmt: skip
        flips = faults.perturb_layer(ctx, tmp_path / f"{kind}-f.csv", layer="classifier.1", variant="w",
                                     spec={"fault": "bit_flip", "levels": [0.0, 0.01]}, repeats=2)  # fmt: skip
        digest = sha256_file(files[kind])[:12]
        assert planned.load["sha256"][:12] == digest
        assert set(base["weights"]) == set(grid["weights"]) == set(flips["weights"]) == {digest}
        # the unperturbed model is the eager network, bit for bit, and level 0 is the unperturbed model
        assert (base[["top1", "top5", "loss"]].iloc[0].to_dict()) == {k: clean[k] for k in ("top1", "top5", "loss")}
        assert (grid.loc[grid["level"] == 0, "loss"] == clean["loss"]).all()
        assert (flips.loc[flips["level"] == 0, "sdc1"] == 0).all()
        tables[kind] = pd.concat([grid, flips]).drop(columns=["weights", "arch"]).reset_index(drop=True)
        assert (grid["n_images"] == 60).all() and (grid["dataset"] == "digits").all()
    for kind in SPECS:  # the same network from every source: the same table, cell for cell
        pd.testing.assert_frame_equal(tables[kind], tables["pt"])
    assert (tables["pt"]["level"] > 0).any() and tables["pt"].loc[tables["pt"]["level"] > 0, "loss"].ne(clean["loss"]).any()


def test_graph_models_are_torchvision_modules_again():
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.resnet18(num_classes=10).eval()
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 1.5)
    x, x5 = torch.randn(2, 3, 32, 32), torch.randn(5, 3, 32, 32)
    ref = [(l.path, l.label, l.kind, l.weight_shape, l.has_bias, l.bn) for l in find_layers(m)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
        from torch._export.converter import TS2EPConverter

        converted = TS2EPConverter(torch.jit.script(m), (x,)).convert().module()
    for gm, order in ((exported, None), (converted, list(m.state_dict()))):
        g = modularise(gm, order=order)
        got = [(l.path, l.label, l.kind, l.weight_shape, l.has_bias, l.bn) for l in find_layers(g)]
        assert got == ref and len(got) == 21
        assert isinstance(g.get_submodule("layer1.0.conv1"), nn.Conv2d) and isinstance(g.get_submodule("fc"), nn.Linear)
        with torch.no_grad():
            assert torch.equal(g(x5), m(x5))


def test_exported_with_a_fixed_batch(tmp_path):
    files = mynet_files(tmp_path / "static", static_batch=2)
    loaded = load_external(files["exported"], {"source": "exported", "key": "models.m"})
    ref = torch.jit.load(str(files["torchscript"]))
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), ref(x))  # batch 5 from a program exported for batch 2

    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.reshape(2, 64))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(Fixed(), (torch.zeros(2, 1, 8, 8),)), str(tmp_path / "fixed.pt2"))
    with pytest.raises(ModelFileError, match=r"models.m.file: .*fixed.pt2 was exported for batches of exactly 2 .*Dim\('batch'\)"):
        load_external(tmp_path / "fixed.pt2", {"source": "exported", "key": "models.m"})


def test_png_0_255_case_stops_with_both_named_and_the_override_gives_the_right_result(lenet_checkpoint, digits_shards, tmp_path):
    test_index = read_manifest(digits_shards)["source"]["test_index"]
    root = png_folder(tmp_path / "png", {"": test_index})
    plan = plan_data({"dataset": {"kind": "image_folder", "root": str(root), "channels": 1}})
    shards = tmp_path / "shards"
    prepare_data_source(shards, plan.spec)
    ctx = RunContext(run="t", dataset=plan.name, shard_dir=str(shards), model="lenet5", model_file=str(lenet_checkpoint))
    with pytest.raises(InputMismatchError) as e:
        cheney.baseline(ctx, tmp_path / "b.csv")
    msg = str(e.value)
    for part in (str(lenet_checkpoint), f"{shards}/manifest.json", "[0, 16]", "[0, 255]", "value_range: [0, 255]",
                 "--value-range 0 255"):  # fmt: skip
        assert part in msg, (part, msg)
    assert "delete" not in msg and not (tmp_path / "b.csv").exists()
    # the remedy: the model's stored range is 0..255 for these images -> scale 1/255, its own mean, std and size
    fixed = ctx.replace(source={"source": "netperturb", "key": "models.lenet5", "preprocess": {"value_range": [0, 255]}})
    got = cheney.baseline(fixed, tmp_path / "b.csv").iloc[0]
    from netperturb.models.checkpoints import load_checkpoint

    loaded = load_checkpoint(lenet_checkpoint)
    images, labels = load_split(shards, "test")
    own = loaded.preprocess
    want = evaluate(loaded.model, images, labels, Preprocess(1 / 255, own.mean, own.std, own.size), batch_size=256).metrics()
    assert (got["top1"], got["top5"], got["loss"]) == (want["top1"], want["top5"], want["loss"])
    silent = evaluate(loaded.model, images, labels, own, batch_size=256).metrics()  # what 0.2 computed, silently
    digits = cheney.baseline(ctx.replace(shard_dir=str(digits_shards), dataset="digits"), tmp_path / "d.csv").iloc[0]
    assert abs(got["top1"] - digits["top1"]) <= 0.02 < digits["top1"] - silent["top1"]


def test_channels_normalisation_and_size_mismatches_name_both(lenet_checkpoint, files, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    rgb = png_folder(tmp_path / "rgb", {"": list(range(40))}, rgb=True)
    plan = plan_data({"dataset": {"kind": "image_folder", "root": str(rgb), "channels": 3,
                                  "transform": {"mean": [0.3, 0.3, 0.3], "std": [0.4, 0.4, 0.4]}}})  # fmt: skip
    prepare_data_source(tmp_path / "rgb_shards", plan.spec)
    ctx = RunContext(run="t", dataset="rgb", shard_dir=str(tmp_path / "rgb_shards"), model="lenet5",
                     model_file=str(lenet_checkpoint))  # fmt: skip
    with pytest.raises(InputMismatchError, match=r"channels: the model takes 1-channel images, the data has 3.*dataset.channels: 1"):
        cheney.baseline(ctx, tmp_path / "b.csv")
    # a model declaring another normalisation than the dataset's transform
    spec = {"source": "python", "factory": "examples.mynet:make_mynet", "kwargs": {"in_channels": 3},
            "weights_file": str(mynet_files(tmp_path / "rgbnet", in_channels=3)["safetensors"]),
            "preprocess": {"mean": [0.5], "std": [0.5]}}  # fmt: skip
    planned = parse_model_spec("m", spec, num_classes=10, in_channels=3)
    with pytest.raises(InputMismatchError, match=r"normalisation: the model expects mean \[0.5\] std \[0.5\], the dataset's transform gives mean \[0.3, 0.3, 0.3\]"):
        cheney.baseline(ctx.replace(model_file=planned.path, source=planned.load), tmp_path / "b.csv")
    # timm: the model's own input size (decoded with its resize and crop), unless preprocess.input_size resizes
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(timm.create_model("test_resnet", num_classes=10).state_dict(), str(tmp_path / "t.safetensors"))
    spec = {"source": "timm", "arch": "test_resnet", "weights_file": str(tmp_path / "t.safetensors")}
    planned = parse_model_spec("t", spec, num_classes=10, in_channels=3)
    plain = plan_data({"dataset": {"kind": "image_folder", "root": str(rgb), "channels": 3}})
    prepare_data_source(tmp_path / "plain", plain.spec)
    tctx = ctx.replace(shard_dir=str(tmp_path / "plain"), model="t", model_file=planned.path, source=planned.load)
    with pytest.raises(InputMismatchError, match=r"the model takes 160x160 images .* the data has 8x8.*resize: 168, crop: 160"):
        cheney.baseline(tctx, tmp_path / "b.csv")
    resized = parse_model_spec("t", {**spec, "preprocess": {"input_size": 32}}, num_classes=10, in_channels=3)
    row = cheney.baseline(tctx.replace(source=resized.load), tmp_path / "t.csv").iloc[0]
    model = timm.create_model("test_resnet", num_classes=10).eval()
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(tmp_path / "t.safetensors")))
    cfg = model.pretrained_cfg
    images, labels = load_split(tmp_path / "plain", "test")
    want = evaluate(model, images, labels, Preprocess(1 / 255, tuple(cfg["mean"]), tuple(cfg["std"]), 32)).metrics()
    assert (row["top1"], row["loss"], row["arch"]) == (want["top1"], want["loss"], "test_resnet")


def test_user_files_are_checked_against_the_sha256_planned(files, tmp_path):
    f = tmp_path / "w.safetensors"
    f.write_bytes(files["safetensors"].read_bytes())
    planned = check_unchanged(f, None, "models.m.weights_file")
    assert planned == sha256_file(f) and check_unchanged(f, planned, "models.m.weights_file") == planned
    f.write_bytes(files["safetensors"].read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(FileChangedError) as e:
        check_unchanged(f, planned, "models.m.weights_file")
    msg = str(e.value)
    assert msg.startswith(f"models.m.weights_file: {f} changed since the workflow was planned")
    assert "run the same command again" in msg and "delete" not in msg


def test_a_model_file_given_as_a_checkpoint_says_what_it_is(files):
    from netperturb.models.checkpoints import load_checkpoint

    assert [sniff_model_file(files[k]) for k in ("pt", "safetensors", "torchscript", "exported")] == [
        "state_dict", "safetensors", "torchscript", "exported"]  # fmt: skip
    for kind, source in (("torchscript", "source: torchscript"), ("exported", "source: exported"), ("pt", "source: python")):
        with pytest.raises(ValueError) as e:
            load_checkpoint(files[kind])
        assert "not a netperturb-checkpoint/1 file" in str(e.value) and source in str(e.value)
        assert "delete" not in str(e.value) and files[kind].exists()
    with pytest.raises(ModelFileError, match=r"models.m.file: .*mynet.pt is not a TorchScript file .*source: python"):
        load_external(files["pt"], {"source": "torchscript", "key": "models.m"}, example_shape=(1, 8, 8))


def test_model_spec_errors_name_the_key(files, tmp_path):
    def err(spec, match):
        with pytest.raises(ConfigError, match=match):
            parse_model_spec("m", spec, num_classes=10, in_channels=1)

    err({"source": "onnx", "file": "x"}, r"models.m.source: 'onnx' unknown; allowed: netperturb, torchvision, timm")
    err({"source": "torchscript", "file": str(files["torchscript"]), "train": {"epochs": 1}},
        r"models.m.train: not used with source torchscript \(a model given as a file is never trained here\)")
    err({"source": "python", "weights_file": str(files["pt"])}, r"models.m.factory: required with source python")
    err({"source": "exported", "file": str(tmp_path / "gone.pt2")}, r"models.m.file: .*gone.pt2 does not exist")
    err({"source": "python", "factory": "x:y", "weights_file": str(files["pt"]), "preprocess": {"scale": 2}},
        r"models.m.preprocess.scale: unknown")
    err({"source": "python", "factory": "x:y", "weights_file": str(files["pt"]), "preprocess": {"value_range": [1, 255]}},
        r"models.m.preprocess.value_range: give \[0, max\]")
    p = parse_model_spec("m", {"source": "python", "factory": "x:y", "weights_file": str(files["pt"])}, num_classes=10,
                         in_channels=1)  # fmt: skip
    assert not p.trained_here and p.user_file and p.load["sha256"] == sha256_file(files["pt"])
    assert parse_model_spec("m", {"arch": "lenet5"}, num_classes=10, in_channels=1).trained_here
    # 0.2 said only "unknown model" for a model of one's own
    from netperturb.models.select import resolve_layers

    with pytest.raises(ConfigError, match=r"models.mynet.arch: unknown model 'mynet'.*models.mynet.source: python with factory"):
        resolve_layers("mynet", {"arch": "mynet"}, "all", num_classes=10, in_channels=1, key="cheney2017.layers")


def test_factory_import_errors(files, tmp_path):
    with pytest.raises(ModelFileError, match=r"models.m.factory: cannot import 'no_such_pkg.mod'"):
        load_external(files["pt"], {"source": "python", "factory": "no_such_pkg.mod:make", "key": "models.m"})
    with pytest.raises(ModelFileError, match=r"models.m.weights_file: .*mynet.pt does not fit .*ConvBNNet: size mismatch"):
        load_external(files["pt"], {"source": "python", "factory": f"{REPO}/tests/conftest.py:ConvBNNet", "key": "models.m"})
    with pytest.raises(ModelFileError, match=r"does not fit .*missing \['features.4.weight'\].*unexpected \['features.3.weight'\]"):
        _mismatched(files)


def _mismatched(files):
    """MyNet's weights with one tensor renamed: a missing and an unexpected key."""
    state = torch.load(files["pt"], weights_only=True)
    state["features.3.weight"] = state.pop("features.4.weight")
    bad = files["pt"].with_name("renamed.pt")
    torch.save(state, bad)
    load_external(bad, {"source": "python", "factory": f"{REPO}/examples/mynet.py:make_mynet", "kwargs": {"in_channels": 1},
                        "key": "models.m"})  # fmt: skip


def test_run_context_from_a_workflow_job():
    class NL(dict):
        __getattr__ = dict.__getitem__

    job = type("Job", (), {})()
    job.params = NL(context={"run": "r", "dataset": "d", "split": "val", "study_seed": "5", "batch_size": 8, "device": "cpu",
                             "model": "m", "source": {"source": "python"}})  # fmt: skip
    job.input = type("In", (), {"shards": "s/shards", "checkpoint": "w.pt"})()
    job.wildcards = type("W", (), {"model": "m"})()
    ctx = RunContext.from_job(job, batch_size=4)
    assert ctx == RunContext(run="r", dataset="d", shard_dir="s/shards", model="m", model_file="w.pt",
                             source={"source": "python"}, split="val", study_seed=5, batch_size=4, device="cpu")  # fmt: skip
    job.params = NL(context={"run": "r", "dataset": "d", "shard": 1})
    with pytest.raises(KeyError, match=r"unknown field\(s\) \['shard'\]"):
        RunContext.from_job(job)
    with pytest.raises(ValueError, match="batch_size"):
        RunContext(run="r", dataset="d", shard_dir="s", batch_size=0)
