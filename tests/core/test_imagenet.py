"""The paper track's inputs: ImageNet val shards from the official archive formats, and
torchvision weights (download with hash check, loading, published numbers)."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pandas as pd
import pytest
import torch
from imagenet_archives import CMYK, CORRUPT, GRAYSCALE, GROUND_TRUTH, CLASSES, make_alexnet_weights, make_archives
from imagenet_archives import sorted_index, val_name

from netperturb.core.config import ConfigError
from netperturb.datasets.shards import load_split, read_manifest
from netperturb.datasets.imagenet import ImageNetError, parse_devkit, prepare_imagenet
from netperturb.models.weights import WeightsError, fetch_weights, get_weights, load_pretrained, published_accuracy, resolve_model_source, transform_key, transform_spec, weights_preprocess

ALEXNET = get_weights("alexnet", "IMAGENET1K_V1")
INCEPTION = get_weights("inception_v3", "IMAGENET1K_V1")


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    return make_archives(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def alexnet_shards(archives, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "shards"
    prepare_imagenet(
        out, transform_spec(ALEXNET), val_tar=archives["val_tar"], devkit=archives["devkit"],
        verify_checksums=False, shard_size=4, max_bad_fraction=0.1, threads=2, progress=False,
    )  # fmt: skip
    return out


def test_devkit_is_read_by_torchvision_and_ids_are_not_in_sorted_order(archives):
    wnid_to_classes, val_wnids = parse_devkit(archives["devkit"], verify_checksum=False)
    assert sorted(wnid_to_classes) == sorted(CLASSES)  # the non-leaf synset is not a class
    assert wnid_to_classes["n01440764"] == ("tench", "Tinca tinca")
    by_id = {v: k for k, v in CLASSES.items()}
    assert val_wnids == [by_id[i] for i in GROUND_TRUTH]
    # the fixture's point: the ILSVRC2012_ID order differs from the sorted-wnid order
    assert [sorted_index(i) for i in range(1, 13)] != [GROUND_TRUTH[i - 1] - 1 for i in range(1, 13)]
    with pytest.raises(ImageNetError, match="md5"):
        parse_devkit(archives["devkit"], verify_checksum=True)


def test_labels_are_the_sorted_wnid_index_and_the_corrupt_file_is_listed(alexnet_shards):
    m = read_manifest(alexnet_shards)
    files = m["source"]["files"]
    expected = [i for i in range(1, 13) if i != CORRUPT]
    assert files == [val_name(i) for i in expected]  # file-name order, corrupt one left out
    x, y = load_split(alexnet_shards, "val", verify=True)
    assert y.tolist() == [sorted_index(i) for i in expected]
    assert m["classes"] == sorted(CLASSES) and m["num_classes"] == 4
    assert m["splits"]["val"]["count"] == 11 and [s["count"] for s in m["splits"]["val"]["shards"]] == [4, 4, 3]
    assert [s["file"] for s in m["skipped"]] == [val_name(CORRUPT)]
    assert "UnidentifiedImageError" in m["skipped"][0]["reason"]
    assert m["source"]["transform"] == {"resize_size": [256], "crop_size": [224], "interpolation": "bilinear", "antialias": True}
    assert x.shape == (11, 3, 224, 224) and x.dtype == torch.uint8
    # grayscale: three equal channels; CMYK: converted to (non-gray) RGB
    g = x[files.index(val_name(GRAYSCALE))]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    c = x[files.index(val_name(CMYK))]
    assert not torch.equal(c[0], c[2])


@pytest.mark.parametrize("weights", [ALEXNET, INCEPTION], ids=["alexnet", "inception_v3"])
def test_shard_pixels_equal_pil_and_the_weights_transforms(archives, tmp_path, weights):
    from PIL import Image

    out = tmp_path / "shards"
    prepare_imagenet(
        out, transform_spec(weights), val_tar=archives["val_tar"], devkit=archives["devkit"],
        verify_checksums=False, max_bad_fraction=0.1, threads=2, progress=False,
    )  # fmt: skip
    x, _ = load_split(out, "val")
    files = read_manifest(out)["source"]["files"]
    crop = weights.transforms().crop_size[0]
    assert x.shape[-2:] == (crop, crop)
    ours = weights_preprocess(weights)(x)
    reference = weights.transforms()  # torchvision: resize, crop, to float, normalise
    for i, name in enumerate(files):
        img = Image.open(io.BytesIO(archives["images"][name])).convert("RGB")
        ref = reference(img)
        torch.testing.assert_close(ours[i], ref, rtol=0, atol=1e-5)


def test_subset_tree_input_and_errors(archives, alexnet_shards, tmp_path):
    spec = transform_spec(ALEXNET)
    # images_per_class: the first image of each class in file-name order
    prepare_imagenet(tmp_path / "sub", spec, val_tar=archives["val_tar"], devkit=archives["devkit"],
                     verify_checksums=False, images_per_class=1, progress=False)  # fmt: skip
    files = read_manifest(tmp_path / "sub")["source"]["files"]
    firsts = {}
    for i in range(1, 13):
        firsts.setdefault(sorted_index(i), i)
    assert files == [val_name(i) for i in sorted(firsts.values())]
    # an extracted val/<wnid>/ tree gives the same shards as the tar
    tree = tmp_path / "val"
    _, val_wnids = parse_devkit(archives["devkit"], verify_checksum=False)
    for i, wnid in enumerate(val_wnids, start=1):
        (tree / wnid).mkdir(parents=True, exist_ok=True)
        (tree / wnid / val_name(i)).write_bytes(archives["images"][val_name(i)])
    prepare_imagenet(tmp_path / "tree", spec, val_dir=tree, devkit=archives["devkit"], verify_checksums=False,
                     max_bad_fraction=0.1, progress=False)  # fmt: skip
    a, b = load_split(alexnet_shards, "val"), load_split(tmp_path / "tree", "val")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # too many unreadable files (1 of 12 > 5%): an error naming the file
    with pytest.raises(ImageNetError, match=f"1 of 12 images unreadable.*{val_name(CORRUPT)}"):
        prepare_imagenet(tmp_path / "bad", spec, val_tar=archives["val_tar"], devkit=archives["devkit"],
                         verify_checksums=False, max_bad_fraction=0.05, progress=False)  # fmt: skip
    assert not (tmp_path / "bad" / "manifest.json").exists()
    # an archive whose image count differs from the ground truth
    short = tmp_path / "short.tar"
    with tarfile.open(archives["val_tar"]) as src, tarfile.open(short, "w") as dst:
        for m in src.getmembers()[:-1]:
            dst.addfile(m, src.extractfile(m))
    with pytest.raises(ImageNetError, match="11 images, but the devkit's ground truth lists 12"):
        prepare_imagenet(tmp_path / "short", spec, val_tar=short, devkit=archives["devkit"], verify_checksums=False)
    with pytest.raises(ImageNetError, match="md5 is not that of the official ILSVRC2012_img_val.tar"):
        prepare_imagenet(tmp_path / "md5", spec, val_tar=archives["val_tar"], devkit=archives["devkit"],
                         verify_checksums=True)  # fmt: skip


def test_transform_keys_share_preprocessing():
    assert transform_key(transform_spec(ALEXNET)) == "resize256-crop224-bilinear"
    assert transform_key(transform_spec(get_weights("vgg16", "IMAGENET1K_V1"))) == "resize256-crop224-bilinear"
    assert transform_key(transform_spec(INCEPTION)) == "resize342-crop299-bilinear"


def test_fetch_weights_checks_the_hash_and_leaves_nothing_behind(tmp_path):
    import hashlib

    served = tmp_path / "served"
    served.mkdir()
    data = b"not really weights, but bytes with a known sha256"
    digest = hashlib.sha256(data).hexdigest()
    good = served / f"net-{digest[:8]}.pth"
    good.write_bytes(data)
    out = tmp_path / "resources" / "weights"
    path = fetch_weights(good.as_uri(), out / good.name, digest[:8], wait_s=0, progress=False)
    assert path.read_bytes() == data
    bad = served / "net-deadbeef.pth"
    bad.write_bytes(data)
    with pytest.raises(WeightsError) as e:
        fetch_weights(bad.as_uri(), out / bad.name, "deadbeef", attempts=2, wait_s=0, progress=False)
    msg = str(e.value)
    assert bad.as_uri() in msg and str(out / bad.name) in msg and "deadbeef" in msg and digest in msg
    assert sorted(p.name for p in out.iterdir()) == [good.name, good.name + ".sha256"]  # the good file and its checksum sidecar; no bad file, no .partial left
    with pytest.raises(WeightsError, match=r"missing-abcd.pth.*after 1 attempt\(s\)"):
        fetch_weights((served / "missing-abcd.pth").as_uri(), out / "missing-abcd.pth", "abcd", attempts=3)
    # a network failure is retried (nothing listens on the port: connection refused each time)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WeightsError, match=rf"127.0.0.1:{port}/net-abcd.pth.*after 2 attempt\(s\)"):
        fetch_weights(f"http://127.0.0.1:{port}/net-abcd.pth", out / "net-abcd.pth", "abcd", attempts=2, wait_s=0)
    assert sorted(p.name for p in out.iterdir()) == [good.name, good.name + ".sha256"]


def test_resolve_model_source_and_config_errors():
    src = resolve_model_source("alexnet", {"arch": "alexnet", "weights": "IMAGENET1K_V1"}, num_classes=1000)
    assert src["url"] == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    assert src["path"] == "resources/weights/alexnet-owt-7be5be79.pth" and src["sha256_prefix"] == "7be5be79"
    assert src["transform_key"] == "resize256-crop224-bilinear" and src["download"]
    mirror = resolve_model_source(
        "a", {"arch": "alexnet", "weights": "IMAGENET1K_V1", "weights_url": "https://mirror.org/x/weights.pth"},
        num_classes=1000,
    )  # a mirror's file without a hash in its name must be the official file
    assert mirror["sha256_prefix"] == "7be5be79" and mirror["path"].endswith("alexnet-owt-7be5be79.pth")
    local = resolve_model_source("a", {"arch": "alexnet", "weights": "DEFAULT", "weights_file": "/w/alexnet-0123abcd.pth"}, num_classes=1000)
    assert local["path"] == "/w/alexnet-0123abcd.pth" and local["sha256_prefix"] == "0123abcd" and not local["download"]
    assert local["weights"] == "IMAGENET1K_V1"
    assert resolve_model_source("lenet5", {"arch": "lenet5"}, num_classes=10) is None
    with pytest.raises(ConfigError, match=r"models\.a\.weights: 'alexnet' has no weights 'IMAGENET22K'"):
        resolve_model_source("a", {"arch": "alexnet", "weights": "IMAGENET22K"}, num_classes=1000)
    with pytest.raises(ConfigError, match=r"models\.a\.weights: alexnet IMAGENET1K_V1 has 1000 classes, the dataset has 10"):
        resolve_model_source("a", {"arch": "alexnet", "weights": "IMAGENET1K_V1"}, num_classes=10)
    with pytest.raises(ConfigError, match=r"models\.a\.weights: 'lenet5' is not a torchvision model"):
        resolve_model_source("a", {"arch": "lenet5", "weights": "IMAGENET1K_V1"}, num_classes=10)
    with pytest.raises(ConfigError, match=r"models\.a\.train: not used with pretrained weights"):
        resolve_model_source("a", {"arch": "alexnet", "weights": "IMAGENET1K_V1", "train": {}}, num_classes=1000)
    with pytest.raises(ConfigError, match=r"models\.a\.weights_url: only used with models\.a\.weights"):
        resolve_model_source("a", {"arch": "alexnet", "weights_url": "file:///x"}, num_classes=1000)


def test_load_pretrained_uses_the_file_and_checks_its_hash(tmp_path):
    path = make_alexnet_weights(tmp_path)
    prefix = path.stem.split("-")[1]
    loaded = load_pretrained(path, "alexnet", "IMAGENET1K_V1", sha256_prefix=prefix)
    state = torch.load(path, weights_only=True)
    assert all(torch.equal(v, state[k]) for k, v in loaded.model.state_dict().items())
    assert not loaded.model.training and loaded.weights.startswith(f"IMAGENET1K_V1@{prefix}")
    assert loaded.preprocess.mean == (0.485, 0.456, 0.406) and loaded.preprocess.std == (0.229, 0.224, 0.225)
    assert loaded.preprocess.scale == pytest.approx(1 / 255) and loaded.preprocess.size is None
    assert torch.hub.get_dir() != "" and "netperturb-hub" not in torch.hub.get_dir()  # restored
    with pytest.raises(WeightsError, match=f"{path.name}: sha256 {prefix}.* does not start with 00ff") as e:
        load_pretrained(path, "alexnet", "IMAGENET1K_V1", sha256_prefix="00ff")
    # the user's file (no download record beside it): never "delete it"
    assert "replace it with a good copy of alexnet IMAGENET1K_V1" in str(e.value) and "delete" not in str(e.value)


def test_published_numbers_and_the_baseline_check():
    from netperturb.studies.cheney2017.figures import baseline_check

    assert published_accuracy("alexnet", "IMAGENET1K_V1@0123") == pytest.approx({"top1": 0.56522, "top5": 0.79066})
    assert published_accuracy("vgg16", "IMAGENET1K_V1@0123") == pytest.approx({"top1": 0.71592, "top5": 0.90382})
    assert published_accuracy("lenet5", "0123456789ab") is None
    base = pd.DataFrame(
        {"model": ["a", "v", "l"], "arch": ["alexnet", "vgg16", "lenet5"],
         "weights": ["IMAGENET1K_V1@01", "IMAGENET1K_V1@02", "0123456789ab"], "n_images": [50_000] * 3,
         "top1": [0.56522 + 0.004, 0.71592 - 0.006, 0.9], "top5": [0.79066, 0.90382, 1.0]}
    )  # fmt: skip
    check = baseline_check(base)
    assert check["model"].tolist() == ["a", "v"]  # no published numbers for the digits model
    assert check["top1_diff"].round(6).tolist() == [0.4, -0.6]
    assert check["flagged"].tolist() == [False, True]
    assert baseline_check(base[base["model"] == "l"]).empty
    assert np.isclose(check["top5_published"].iloc[1], 0.90382)
