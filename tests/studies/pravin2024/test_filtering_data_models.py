"""Torchvision models with an adapted first conv; CIFAR-10 and Tiny ImageNet from tiny files in
their distributed formats."""

import pickle
import tarfile

import numpy as np
import pytest
import torch
from torch import nn

from netperturb.datasets.registry import DATASETS
from netperturb.core.preprocess import Preprocess
from netperturb.datasets.shards import load_split, read_manifest
from netperturb.models import build_meta, get_model
from netperturb.datasets.prepare import PREPARERS


@pytest.mark.parametrize(
    "arch, first", [("resnet18", "conv1"), ("resnet50", "conv1"), ("squeezenet1_1", "features.0"), ("shufflenet_v2_x1_0", "conv1.0")]
)
def test_torchvision_first_conv_takes_the_input_channels(arch, first):
    torch.manual_seed(0)
    m = get_model(arch, num_classes=7, in_channels=1)
    conv = m.get_submodule(first)
    ref = build_meta(arch, num_classes=7, in_channels=3).get_submodule(first)
    assert isinstance(conv, nn.Conv2d) and conv.in_channels == 1
    assert (conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.bias is None) == (
        ref.out_channels, ref.kernel_size, ref.stride, ref.padding, ref.bias is None)  # fmt: skip
    assert build_meta(arch, num_classes=7, in_channels=1).get_submodule(first).in_channels == 1
    if arch != "resnet50":
        assert m.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    # 3 channels: torchvision's own module, untouched
    assert get_model(arch, num_classes=7, in_channels=3).get_submodule(first).in_channels == 3


def _cifar_folder(root, n_per_batch=3, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        batches[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": [f"{name}_{i}.png" for i in range(n_per_batch)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f)
    return batches


@pytest.mark.parametrize("as_archive", [False, True])
def test_prepare_cifar10_from_the_python_version(tmp_path, as_archive):
    root = tmp_path / "cifar"
    batches = _cifar_folder(root)
    if as_archive:
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        import shutil

        shutil.rmtree(root / "cifar-10-batches-py")
    m = PREPARERS["cifar10"](tmp_path / "shards", {"root": str(root), "verify_checksums": False})
    assert m["splits"]["train"]["count"] == 15 and m["splits"]["test"]["count"] == 3
    assert m["classes"][:2] == ["class0", "class1"] and DATASETS["cifar10"]["in_channels"] == 3
    x, y = load_split(tmp_path / "shards", "train")
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.uint8
    # row layout of the official files: 1024 red, 1024 green, 1024 blue values, row-major 32 x 32
    data, labels = batches["data_batch_2"]
    assert np.array_equal(x[3:6].numpy(), data.reshape(3, 3, 32, 32)) and y[3:6].tolist() == labels
    assert x[4, 1, 2, 5] == data[1, 1024 + 2 * 32 + 5]
    pre = Preprocess.from_dict(m["preprocess"])
    assert len(pre.mean) == 3 and pre.scale == pytest.approx(1 / 255)
    assert pre.mean[2] == pytest.approx(x[:, 2].double().mean().item() / 255, abs=1e-6)
    with pytest.raises(ValueError, match="md5 does not match"):
        PREPARERS["cifar10"](tmp_path / "shards2", {"root": str(root), "verify_checksums": True})


def test_prepare_cifar10_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        PREPARERS["cifar10"](tmp_path / "s", {"root": str(tmp_path)})
    _cifar_folder(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        PREPARERS["cifar10"](tmp_path / "s", {"root": str(tmp_path), "verify_checksums": False})
    with pytest.raises(ValueError, match="datasets.cifar10.root"):
        PREPARERS["cifar10"](tmp_path / "s", {})


def _tiny_imagenet(root, colors):
    from PIL import Image

    base = root / "tiny-imagenet-200"
    wnids = list(colors)
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # file order is not the class order
    ann = []
    for w, rgb in colors.items():
        d = base / "train" / w / "images"
        d.mkdir(parents=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(2):
            Image.new("RGB", (64, 64), rgb).save(d / f"{w}_{i}.JPEG", quality=95)
        Image.new("RGB", (64, 64), rgb).save(base / "val" / "images" / f"val_{w}.JPEG", quality=95)
        ann.append(f"val_{w}.JPEG\t{w}\t0\t0\t63\t63")
    Image.new("L", (64, 64), 200).save(base / "val" / "images" / "val_gray.JPEG")  # grayscale, as some real ones
    ann.append(f"val_gray.JPEG\t{wnids[0]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    return base


def test_prepare_tiny_imagenet_layout(tmp_path):
    colors = {"n01443537": (250, 10, 10), "n01629819": (10, 250, 10), "n01641577": (10, 10, 250)}
    base = _tiny_imagenet(tmp_path, colors)
    m = PREPARERS["tiny_imagenet"](tmp_path / "shards", {"root": str(tmp_path)})  # the parent works too
    assert m["classes"] == sorted(colors) and m["num_classes"] == 3 and DATASETS["tiny_imagenet"]["num_classes"] == 200
    assert m["splits"]["train"]["count"] == 6 and m["splits"]["test"]["count"] == 4
    x, y = load_split(tmp_path / "shards", "train")
    assert x.shape == (6, 3, 64, 64) and y.tolist() == [0, 0, 1, 1, 2, 2]
    for img, label in zip(x, y):
        rgb = colors[sorted(colors)[label]]
        assert (img.double().mean(dim=(1, 2)) - torch.tensor(rgb, dtype=torch.float64)).abs().max() < 4  # JPEG
    xt, yt = load_split(tmp_path / "shards", "test")
    assert yt.tolist() == [0, 1, 2, 0] and (xt[3].double().mean(dim=(1, 2)) - 200).abs().max() < 2  # gray -> RGB
    # a broken image: an error naming it, or skipped and listed within the tolerated fraction
    bad = base / "train" / "n01629819" / "images" / "n01629819_1.JPEG"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="n01629819_1.JPEG"):
        PREPARERS["tiny_imagenet"](tmp_path / "s2", {"root": str(base)})
    m = PREPARERS["tiny_imagenet"](tmp_path / "s3", {"root": str(base), "max_bad_fraction": 0.2})
    assert m["splits"]["train"]["count"] == 5 and [s["file"] for s in m["skipped"]] == [str(bad)]
    (base / "val" / "val_annotations.txt").write_text("val_x.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match="unknown or missing wnid"):
        PREPARERS["tiny_imagenet"](tmp_path / "s4", {"root": str(base), "max_bad_fraction": 0.2})
    with pytest.raises(FileNotFoundError, match="wnids.txt"):
        PREPARERS["tiny_imagenet"](tmp_path / "s5", {"root": str(tmp_path / "nowhere")})
    assert read_manifest(tmp_path / "shards")["source"]["test_split"] == "val"
