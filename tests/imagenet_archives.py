"""Tiny ImageNet archives in the official formats, and a random AlexNet weights file, for tests.

- ``ILSVRC2012_img_val.tar``: JPEGs ``ILSVRC2012_val_000000NN.JPEG`` at the top level, of
  several sizes and aspect ratios; one grayscale, one CMYK, one corrupt file.
- ``ILSVRC2012_devkit_t12.tar.gz``: ``ILSVRC2012_devkit_t12/data/meta.mat`` (a ``synsets``
  struct array with the real field layout: ILSVRC2012_ID, WNID, words, gloss, num_children,
  children, wordnet_height, num_train_images; one non-leaf synset that is not a class) and
  ``data/ILSVRC2012_validation_ground_truth.txt``. The ILSVRC2012_IDs are deliberately not
  in sorted-wnid order, so a label taken from the ID instead of the sorted wnid is caught.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np

# wnid -> ILSVRC2012_ID; sorted wnids are n01440764 < n01443537 < n01484850 < n01491361,
# their IDs 3, 1, 4, 2: the ID order is not the sorted-wnid order.
CLASSES = {"n01440764": 3, "n01443537": 1, "n01484850": 4, "n01491361": 2}
WORDS = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
         "n01484850": "great white shark", "n01491361": "tiger shark, Galeocerdo cuvieri"}  # fmt: skip
# ILSVRC2012_ID of validation image 1, 2, ...
GROUND_TRUTH = [1, 3, 2, 4, 1, 3, 2, 4, 4, 1, 3, 2]
SIZES = [(120, 90), (90, 140), (100, 100), (160, 96), (75, 110), (130, 80),
         (96, 96), (140, 70), (88, 120), (110, 110), (150, 100), (64, 128)]  # fmt: skip
GRAYSCALE, CMYK, CORRUPT = 2, 5, 7  # 1-based image numbers


def val_name(i: int) -> str:
    return f"ILSVRC2012_val_{i:08d}.JPEG"


def sorted_index(image_number: int) -> int:
    """The label torchvision weights expect for validation image ``image_number`` (1-based)."""
    wnid = {v: k for k, v in CLASSES.items()}[GROUND_TRUTH[image_number - 1]]
    return sorted(CLASSES).index(wnid)


def _jpeg(i: int, rng: np.random.Generator) -> bytes:
    from PIL import Image

    w, h = SIZES[i - 1]
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1)
    arr = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if i == GRAYSCALE:
        img = img.convert("L")
    elif i == CMYK:
        img = img.convert("CMYK")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    if i == CORRUPT:
        data = data[:40] + bytes(rng.integers(0, 256, 200, dtype=np.uint8))  # header, then garbage
    return data


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_val_tar(path: Path, images: dict[str, bytes]) -> Path:
    """``ILSVRC2012_img_val.tar``'s layout: the files at the top level (added in reverse name
    order, so member order is not file-name order)."""
    with tarfile.open(path, "w") as tar:
        for name in reversed(sorted(images)):
            _add(tar, name, images[name])
    return path


def write_devkit(path: Path, classes: dict[str, int], words: dict[str, str], ground_truth: list[int]) -> Path:
    """``ILSVRC2012_devkit_t12.tar.gz``'s layout: ``meta.mat`` with a ``synsets`` struct array
    (the real field layout; ``classes`` wnid -> ILSVRC2012_ID are the leaves, plus one non-leaf
    synset) and the validation ground truth (one ILSVRC2012_ID per line)."""
    import scipy.io

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height", "num_train_images"]
    rows = [(cid, wnid, words[wnid], f"gloss of {wnid}", 0, np.zeros((1, 0)), 0, 1300) for wnid, cid in classes.items()]
    rows.append((len(classes) + 1, "n00001740", "entity", "that which is perceived", 2, np.array([[1, 2]]), 19, 0))
    synsets = np.empty((len(rows), 1), dtype=[(f, object) for f in fields])
    for j, row in enumerate(rows):
        synsets[j, 0] = row
    meta = io.BytesIO()
    scipy.io.savemat(meta, {"synsets": synsets})
    truth = "".join(f"{c}\n" for c in ground_truth).encode()
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "ILSVRC2012_devkit_t12/data/meta.mat", meta.getvalue())
        _add(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth)
    return path


def make_archives(root: Path) -> dict:
    """Write the val tar and devkit into ``root``; returns their paths and the JPEG bytes."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = {val_name(i): _jpeg(i, rng) for i in range(1, len(GROUND_TRUTH) + 1)}
    return {
        "val_tar": write_val_tar(root / "ILSVRC2012_img_val.tar", images),
        "devkit": write_devkit(root / "ILSVRC2012_devkit_t12.tar.gz", CLASSES, WORDS, GROUND_TRUTH),
        "images": images,
    }


def make_alexnet_weights(root: Path, seed: int = 0) -> Path:
    """A random torchvision AlexNet state dict (weights N(0, 1/fan_in), biases N(0, 0.01)),
    saved as ``alexnet-<sha256[:10]>.pth`` (torch.hub's naming, so the name carries the file's
    real hash prefix)."""
    import torch
    import torchvision

    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.alexnet(weights=None).state_dict().items()}
    state = {}
    for k, shape in shapes.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 10_000
        state[k] = torch.randn(shape, generator=g) / fan_in**0.5
    tmp = root / "alexnet.tmp"
    torch.save(state, tmp)
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    path = root / f"alexnet-{h.hexdigest()[:10]}.pth"
    tmp.rename(path)
    return path
