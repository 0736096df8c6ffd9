"""Data from anywhere (issue 23, point 3): image folders with torchvision ImageFolder semantics,
tensor files, and ImageNet's val_dir for 1-channel models; each decoded once into shards whose
manifest records the value range, channels, size and the normalisation given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netperturb.core.config import ConfigError
from netperturb.datasets.folder import FolderError
from netperturb.datasets.imagenet import prepare_imagenet
from netperturb.datasets.shards import load_split, read_manifest
from netperturb.datasets.sources import plan_data, prepare_data_source
from netperturb.datasets.tensors import TensorFileError
from netperturb.models.expects import data_inputs
from netperturb.models.sources import plan_sources
from source_files import digits_uint8, png_folder


def _image_folder(root, channels: int, transform=None):
    """torchvision's ImageFolder on ``root``, decoded as netperturb decodes (PIL convert, resize
    + centre crop with antialias), stacked: the reference for the shards."""
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.datasets import ImageFolder

    steps = [T.Resize(transform["resize"]), T.CenterCrop(transform["crop"])] if transform else []
    ds = ImageFolder(str(root), loader=lambda p: Image.open(p).convert("L" if channels == 1 else "RGB"),
                     transform=T.Compose([*steps, TF.pil_to_tensor]))  # fmt: skip
    x, y = zip(*[ds[i] for i in range(len(ds))])
    return torch.stack(x), torch.tensor(y), ds.classes


def test_image_folder_is_imagefolder(tmp_path):
    root = png_folder(tmp_path / "eval", {"": list(range(40))})  # 0.png, 1.png, ... in every class folder
    names = [p.name for p in (root / "3").iterdir()]
    assert "000.png" in names and (root / "7" / "000.png").exists()  # the same file name in two classes
    plan = plan_data({"dataset": {"kind": "image_folder", "root": str(root), "channels": 1}})
    assert plan.info == {"num_classes": 10, "in_channels": 1, "eval_split": "test", "splits": ("test",)}
    assert plan.name == "eval" and not plan.trainable and plan.shard_dir.startswith("resources/data/eval-")
    m = prepare_data_source(tmp_path / "s", plan.spec)
    x, y = load_split(tmp_path / "s", "test")
    rx, ry, classes = _image_folder(root, 1)
    assert torch.equal(x, rx) and torch.equal(y, ry) and m["classes"] == classes and x.shape == (40, 1, 8, 8)
    assert m["value_range"] == [0, 255] and "normalisation" not in m and m["source"]["files"]["test"][0] == "0/000.png"
    facts = data_inputs(m)
    assert (facts["value_max"], facts["channels"], facts["size"], facts["normalisation"]) == (255.0, 1, (8, 8), None)
    # an evaluation-only folder cannot train a model: planning says so, naming the model's key
    cfg = {"dataset": plan.spec, "models": {"lenet": {"arch": "lenet5"}}}
    with pytest.raises(ConfigError, match=r"models.lenet.source: the dataset eval has no training split"):
        plan_sources(cfg, num_classes=10, data=plan)


def test_train_test_folder_transform_and_normalisation(tmp_path):
    root = png_folder(tmp_path / "tt", {"train": list(range(30)), "test": list(range(100, 120))}, rgb=True)
    spec = {"kind": "image_folder", "root": str(root), "transform": {"resize": 12, "crop": 10}}
    plan = plan_data({"dataset": spec})
    assert plan.trainable and plan.info["splits"] == ("train", "test") and plan.info["in_channels"] == 3
    m = prepare_data_source(tmp_path / "s", plan.spec)
    for split in ("train", "test"):
        x, y = load_split(tmp_path / "s", split)
        rx, ry, _ = _image_folder(root / split, 3, {"resize": 12, "crop": 10})
        assert torch.equal(x, rx) and torch.equal(y, ry) and x.shape[1:] == (3, 10, 10)
    # no normalisation given: the training split's per-channel mean and std (of the [0, 1] images)
    train = load_split(tmp_path / "s", "train")[0].double() / 255
    assert m["preprocess"]["mean"] == [round(v, 6) for v in train.mean((0, 2, 3)).tolist()]
    assert m["preprocess"]["std"] == [round(v, 6) for v in train.std((0, 2, 3)).tolist()]
    given = plan_data({"dataset": {**spec, "transform": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}}})
    assert given.shard_dir != plan.shard_dir  # another transform: other shards
    m2 = prepare_data_source(tmp_path / "s2", given.spec)
    assert m2["normalisation"] == {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]} and m2["preprocess"]["mean"] == [0.5, 0.4, 0.3]


def test_folder_errors_name_the_key_and_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.root: .*nowhere is not a folder"):
        plan_data({"dataset": {"kind": "image_folder", "root": str(tmp_path / "nowhere")}})
    root = png_folder(tmp_path / "tt", {"train": list(range(10)), "test": list(range(10, 20))})
    (root / "test" / "zebra").mkdir()
    with pytest.raises(ConfigError, match=r"dataset.root: .*test has classes that .*train does not: \['zebra'\]"):
        plan_data({"dataset": {"kind": "image_folder", "root": str(root)}})
    with pytest.raises(ConfigError, match=r"dataset.colour: not a key of an image_folder dataset"):
        plan_data({"dataset": {"kind": "image_folder", "root": str(root), "colour": 1}})
    with pytest.raises(ConfigError, match=r"dataset.transform: mean \[0.5\] and std \[0.2, 0.2\] need the same length"):
        plan_data({"dataset": {"kind": "image_folder", "root": str(root), "transform": {"mean": [0.5], "std": [0.2, 0.2]}}})
    mixed = png_folder(tmp_path / "mixed", {"": list(range(20))})
    from PIL import Image

    Image.new("L", (12, 9)).save(mixed / "4" / "big.png")
    (mixed / "5" / "broken.png").write_bytes(b"\x89PNG not really")
    plan = plan_data({"dataset": {"kind": "image_folder", "root": str(mixed), "channels": 1, "max_bad_fraction": 0.1}})
    with pytest.raises(FolderError, match=r"images of different sizes: .*big.png is \(9, 12\).*dataset.transform.resize"):
        prepare_data_source(tmp_path / "s", plan.spec)
    (mixed / "4" / "big.png").unlink()
    strict = plan_data({"dataset": {"kind": "image_folder", "root": str(mixed), "channels": 1}})
    with pytest.raises(FolderError, match=r"1 of 21 images in .* unreadable \(> dataset.max_bad_fraction = 0.0\): .*broken.png"):
        prepare_data_source(tmp_path / "s", strict.spec)
    plan = plan_data({"dataset": {"kind": "image_folder", "root": str(mixed), "channels": 1, "max_bad_fraction": 0.1}})
    m = prepare_data_source(tmp_path / "s", plan.spec)
    assert m["splits"]["test"]["count"] == 20 and [s["file"] for s in m["skipped"]] == ["5/broken.png"]


def test_tensor_files(tmp_path):
    x16, y = digits_uint8(scale_to_255=False)
    np.savez(tmp_path / "d.npz", images=x16[:50], labels=y[:50])
    plan = plan_data({"dataset": {"kind": "tensors", "path": str(tmp_path / "d.npz"), "value_range": [0, 16]}})
    assert plan.info == {"num_classes": 10, "in_channels": 1, "eval_split": "test", "splits": ("test",)}
    assert plan.inputs == [str(tmp_path / "d.npz")] and plan.name == "d"
    m = prepare_data_source(tmp_path / "s", plan.spec)
    x, labels = load_split(tmp_path / "s", "test")
    assert torch.equal(x, torch.from_numpy(x16[:50])[:, None]) and torch.equal(labels, torch.from_numpy(y[:50]))
    assert m["value_range"] == [0, 16.0] and data_inputs(m)["value_max"] == 16.0
    # float images in [0, 1], both splits: stored as round(255 x), the rounding error recorded
    xf = torch.rand(30, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    torch.save({"train_images": xf[:20], "train_labels": torch.arange(20) % 4, "test_images": xf[20:],
                "test_labels": torch.arange(10) % 4, "classes": ["a", "b", "c", "d"]}, tmp_path / "f.pt")  # fmt: skip
    plan = plan_data({"dataset": {"kind": "tensors", "path": str(tmp_path / "f.pt")}})
    assert plan.info["num_classes"] == 4 and plan.trainable and plan.info["in_channels"] == 3
    m = prepare_data_source(tmp_path / "f", plan.spec)
    assert torch.equal(load_split(tmp_path / "f", "test")[0], torch.round(xf[20:].double() * 255).to(torch.uint8))
    assert m["classes"] == ["a", "b", "c", "d"] and m["value_range"] == [0, 255.0]
    assert 0 < m["source"]["quantisation_error"] <= 0.5 / 255 + 1e-12
    # normalised images are not images on a [0, max] scale
    torch.save({"images": xf - 0.5, "labels": torch.zeros(30, dtype=torch.long)}, tmp_path / "n.pt")
    plan = plan_data({"dataset": {"kind": "tensors", "path": str(tmp_path / "n.pt")}})
    with pytest.raises(TensorFileError, match=r"dataset.path: .*n.pt: test images hold values in \[-0.4.*outside the value range \[0, 1\].*dataset.value_range"):
        prepare_data_source(tmp_path / "n", plan.spec)
    torch.save({"x": xf}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=r"dataset.path: .*bad.pt has entries \['x'\]; expected images and labels"):
        plan_data({"dataset": {"kind": "tensors", "path": str(tmp_path / "bad.pt")}})
    with pytest.raises(ConfigError, match=r"dataset.num_classes: 2, but .*d.npz has labels up to 9"):
        plan_data({"dataset": {"kind": "tensors", "path": str(tmp_path / "d.npz"), "num_classes": 2}})


def test_imagenet_val_dir_grayscale_and_one_name_in_two_classes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    tree = tmp_path / "val"
    for wnid in ("n01440764", "n01443537"):
        for name in ("a.JPEG", "b.JPEG"):
            (tree / wnid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tree / wnid / name, "JPEG")
    spec = {"resize_size": [36], "crop_size": [32], "interpolation": "bilinear", "antialias": True}
    m = prepare_imagenet(tmp_path / "s", spec, val_dir=tree, verify_checksums=False, channels=1, progress=False)
    x, y = load_split(tmp_path / "s", "val")
    assert x.shape == (4, 1, 32, 32) and y.tolist() == [0, 1, 0, 1]  # file-name order, a shared name by class
    assert m["source"]["files"] == ["n01440764/a.JPEG", "n01443537/a.JPEG", "n01440764/b.JPEG", "n01443537/b.JPEG"]
    import torchvision.transforms.functional as TF

    with Image.open(tree / "n01443537" / "a.JPEG") as img:
        want = TF.pil_to_tensor(TF.center_crop(TF.resize(img.convert("L"), [36], antialias=True), [32]))
    assert torch.equal(x[1], want) and m["source"]["channels"] == 1


def test_manifest_facts_of_builtin_datasets(digits_shards):
    m = read_manifest(digits_shards)
    facts = data_inputs(m)
    assert m["value_range"] == [0, 16.0] and facts["value_max"] == 16.0 and facts["channels"] == 1
    assert facts["size"] == (8, 8) and facts["normalisation"] is None
    old = {k: v for k, v in m.items() if k != "value_range"}  # a manifest written before 0.3
    assert data_inputs(old)["value_max"] == 16.0


@pytest.mark.parametrize("dataset,message", [
    ({"kind": "image_folder"}, "dataset: 'root' is a required property"),
    ({"kind": "tensors", "root": "x"}, "dataset: 'path' is a required property"),
    ({"kind": "image_folder", "root": "x", "channels": 2}, "dataset.channels: 2 is not one of [1, 3]"),
    ({"kind": "zip", "root": "x"}, "dataset.kind: 'zip' is not one of ['image_folder', 'tensors']"),
    ({"kind": "image_folder", "root": "x", "transform": {"crop": 0}}, "dataset.transform.crop: 0 is less than the minimum of 1"),
    ("imagenet21k", "dataset: 'imagenet21k' is not one of ['digits', 'mnist', 'cifar10', 'tiny_imagenet', 'imagenet']"),
])  # fmt: skip
def test_the_schema_names_the_dataset_key(dataset, message):
    import yaml

    from netperturb.core.config import config_errors
    from source_files import REPO

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["dataset"] = dataset
    assert config_errors(cfg, REPO / "config" / "schema.yaml") == [message]
    cfg["dataset"] = {"kind": "image_folder", "root": "x", "channels": 1, "transform": {"resize": 36, "crop": [32, 32]}}
    cfg["models"] = {"m": {"source": "python", "factory": "examples.mynet:make_mynet", "weights_file": "w.pt",
                           "preprocess": {"value_range": [0, 255], "mean": [0.3], "std": [0.4], "input_size": 32}}}  # fmt: skip
    assert config_errors(cfg, REPO / "config" / "schema.yaml") == []
