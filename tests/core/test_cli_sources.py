"""The command line takes the config's model specs and a perturbation's options (issue 23,
point 5): ``netperturb layers`` / ``netperturb perturb`` with ``--source``, and the SDC columns."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from netperturb import cli
from netperturb.core.io import sha256_file
from netperturb.datasets.sources import plan_data, prepare_data_source
from source_files import REPO, mynet_files, png_folder

PATHS = ["features.0", "features.4", "classifier.1", "classifier.3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    files = mynet_files(d / "nets")
    root = png_folder(d / "digits", {"": list(range(1000, 1040))})
    plan = plan_data({"dataset": {"kind": "image_folder", "root": str(root), "channels": 1}})
    prepare_data_source(d / "shards", plan.spec)
    return d, files


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _layer_paths(out: str) -> list[str]:
    return [line.split()[2] for line in out.splitlines() if line.strip()[:1].isdigit()]


def test_layers_of_every_file_source(setup, tmp_path, capsys):
    d, files = setup
    spec = tmp_path / "mynet.yaml"
    spec.write_text(f"source: python\nfactory: {REPO}/examples/mynet.py:make_mynet\nkwargs: {{in_channels: 1}}\n"
                    f"weights_file: {files['pt']}\n")  # fmt: skip
    from examples.mynet import make_mynet

    total = sum(p.numel() for p in make_mynet(10, 1).parameters())
    covered = total - 2 * 16  # all but the BatchNorm's weight and bias
    for args, kind in (
        (["--source", "python", "--factory", f"{REPO}/examples/mynet.py:make_mynet", "--kwarg", "in_channels=1",
          "--weights-file", str(files["safetensors"])], "safetensors"),
        (["--source", "torchscript", "--file", str(files["torchscript"])], "torchscript"),
        (["--source", "exported", "--file", str(files["exported"])], "exported"),
        (["--model-spec", str(spec)], "pt"),
    ):  # fmt: skip
        assert cli.main(["layers", "--in-channels", "1", "--num-classes", "10", *args]) == 0
        out = capsys.readouterr().out
        assert _layer_paths(out) == PATHS, out
        assert sha256_file(files[kind]) in out
        assert f"layers: 4, {covered} of {total} parameters ({covered / total:.1%}) perturbable" in out


def test_perturb_with_a_model_file_prints_the_sdc_columns(setup, tmp_path, capsys, keep_threads):
    d, files = setup
    out_csv = tmp_path / "cell.csv"
    rc = cli.main(["perturb", "--source", "exported", "--file", str(files["exported"]), "--shards", str(d / "shards"),
                   "--layer", "conv2", "--perturbation", "bit_flip", "--option", "format=int8", "--granularity", "channel",
                   "--levels", "0", "0.01", "--repeats", "2", "--out", str(out_csv)])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.split("\n")[0].split() == ["level", "repeat", "top1", "top5", "loss", "sdc1", "sdc5", "due"]
    df = pd.read_csv(out_csv)
    assert len(df) == 4 and set(df["reference"]) == {"int8_channel"} and set(df["format"]) == {"int8"}
    assert set(df["dataset"]) == {"digits"} and (df["n_images"] == 40).all() and set(df["layer"]) == {"features.4"}
    assert (df.loc[df["level"] == 0, "sdc1"] == 0).all() and set(df["weights"]) == {sha256_file(files["exported"])[:12]}
    # level 0 is the int8 network (the format's own fault-free reference), not the fp32 one
    from netperturb.core.context import RunContext
    from netperturb.studies.faults.jobs import baseline

    ctx = RunContext(run="cli", dataset="digits", shard_dir=str(d / "shards"), model="m", model_file=str(files["exported"]),
                     source={"source": "exported", "key": "--"})  # fmt: skip
    ref = baseline(ctx, tmp_path / "b.csv", reference="int8_channel").iloc[0]
    assert (df.loc[df["level"] == 0, "loss"] == ref["loss"]).all()


def test_perturb_knockout_and_bad_model_options(setup, tmp_path, capsys, keep_threads):
    d, files = setup
    rc = cli.main(["perturb", "--source", "torchscript", "--file", str(files["torchscript"]), "--shards", str(d / "shards"),
                   "--layer", "fc4", "--perturbation", "node_knockout", "--bn-aware", "false", "--levels", "0", "0.5",
                   "--repeats", "1", "--out", str(tmp_path / "k.csv")])  # fmt: skip
    assert rc == 0 and "sdc1" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "k.csv")["layer"].tolist() == ["classifier.3"] * 2
    # a TorchScript file given as a netperturb checkpoint: what it is and how to give it, never "delete it"
    rc = cli.main(["perturb", "--checkpoint", str(files["torchscript"]), "--shards", str(d / "shards"), "--layer", "conv1",
                   "--perturbation", "synapse_knockout", "--levels", "0.5", "--out", str(tmp_path / "x.csv")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "not a netperturb-checkpoint/1 file" in err and "TorchScript file (source: torchscript)" in err
    assert "delete" not in err and files["torchscript"].exists()
    rc = cli.main(["layers", "--source", "python", "--weights-file", str(files["pt"])])
    assert rc == 2 and "--factory: required with source python" in capsys.readouterr().err
    rc = cli.main(["perturb", "--source", "exported", "--file", str(files["exported"]), "--shards", str(d / "shards"),
                   "--layer", "conv1", "--perturbation", "bit_flip", "--option", "format", "--levels", "0",
                   "--out", str(tmp_path / "y.csv")])  # fmt: skip
    assert rc == 2 and "--option 'format': give KEY=VALUE" in capsys.readouterr().err


def test_layers_of_a_timm_model(tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    from netperturb.core.layers import find_layers

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=7)
    save_file(model.state_dict(), str(tmp_path / "t.safetensors"))
    args = ["layers", "--source", "timm", "--arch", "test_resnet", "--weights-file", str(tmp_path / "t.safetensors"),
            "--num-classes", "7"]  # fmt: skip
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert _layer_paths(out) == [l.path for l in find_layers(model)] and sha256_file(tmp_path / "t.safetensors") in out
    assert "'input_size': [160, 160]" in out and "'value_range': [0, 255.0]" in out  # timm's pretrained config
