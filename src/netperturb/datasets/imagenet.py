"""ImageNet (ILSVRC 2012) validation set -> uint8 shards, decoded once with a model's own
resize and centre crop.

Inputs, as distributed by image-net.org (nothing is downloaded):

- ``ILSVRC2012_img_val.tar``: 50,000 JPEGs ``ILSVRC2012_val_00000001.JPEG`` .. at the top
  level of the tar; or an already extracted tree ``val/<wnid>/<file>.JPEG`` (the layout
  ``torchvision.datasets.ImageNet`` makes);
- ``ILSVRC2012_devkit_t12.tar.gz``: ``data/meta.mat`` (the synsets; the 1,000 leaf synsets are
  the classes) and ``data/ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012_ID per
  validation image, in file-name order).

The devkit is parsed by torchvision's own code (``torchvision.datasets.imagenet.
parse_devkit_archive`` / ``load_meta_file``), which maps each validation image to its wnid.
**Labels are the index of the wnid among the sorted wnids** -- the class order of
``torchvision.datasets.ImageNet`` / ``ImageFolder`` and hence of every torchvision weights
file -- not the devkit's ILSVRC2012_ID (a different order).

Each image is decoded by PIL, converted to RGB (grayscale and CMYK JPEGs occur in ImageNet),
resized and centre-cropped exactly as ``weights.transforms()`` does
(``torchvision.transforms.functional.resize`` with the weights' size, interpolation and
antialias, then ``center_crop``), and stored as uint8 (3, crop, crop) (or (1, crop, crop) with ``channels=1``). The rest of the
weights' transform (scale to [0, 1], mean/std) is applied on the device
(:class:`netperturb.core.preprocess.Preprocess`). Images PIL cannot read are skipped and listed in the
manifest with the reason; more than ``max_bad_fraction`` of them is an error.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tarfile
import tempfile
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from unittest import mock

import torch
from torch import Tensor
from tqdm import tqdm  # plain tqdm: tqdm.auto in a notebook kernel warns (IProgress) without ipywidgets

from netperturb.datasets.shards import write_shards

__all__ = ["parse_devkit", "decode_image", "prepare_imagenet", "IMAGE_SUFFIXES", "ImageNetError"]

log = logging.getLogger("netperturb")

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class ImageNetError(ValueError):
    """The ImageNet inputs are missing, inconsistent, or too many images are unreadable."""


def _official_md5(kind: str) -> tuple[str, str]:
    from torchvision.datasets.imagenet import ARCHIVE_META

    return ARCHIVE_META[kind]


def parse_devkit(devkit: str | os.PathLike, *, verify_checksum: bool = True) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Class names and the wnid of every validation image, from the devkit archive.

    Returns:
        ``(wnid_to_classes, val_wnids)``: every class wnid -> its names (tuple of str);
        the wnid of the i-th validation image in file-name order (i = 0 .. 49,999).

    Implementation: torchvision's ``parse_devkit_archive`` (leaf synsets of ``meta.mat``,
    ILSVRC2012_ID -> wnid, ground truth per image). With ``verify_checksum`` the archive
    must be the official file (torchvision checks its md5); without, torchvision's md5 check
    is bypassed so a re-packed archive (e.g. the tests' small one) can be read.

    Raises:
        FileNotFoundError: no such file.
        ImageNetError: md5 mismatch, or the archive is not a devkit (names the file).
    """
    import torchvision.datasets.imagenet as tvi

    devkit = Path(devkit)
    if not devkit.is_file():
        raise FileNotFoundError(f"ImageNet devkit {devkit} does not exist")
    name, _ = _official_md5("devkit")
    with tempfile.TemporaryDirectory(prefix="netperturb-devkit-") as root:
        os.symlink(devkit.resolve(), Path(root) / name)
        patch = mock.patch.object(tvi, "_verify_archive", lambda *a, **k: None) if not verify_checksum else None
        try:
            if patch:
                patch.start()
            tvi.parse_devkit_archive(root, file=name)
            wnid_to_classes, val_wnids = tvi.load_meta_file(root)
        except RuntimeError as e:
            raise ImageNetError(f"{devkit}: not the official ILSVRC2012 devkit (md5 check failed: {e})") from None
        except (OSError, KeyError, ValueError, IndexError, tarfile.TarError) as e:
            raise ImageNetError(f"{devkit}: cannot read the devkit ({type(e).__name__}: {e})") from None
        finally:
            if patch:
                patch.stop()
    return dict(wnid_to_classes), list(val_wnids)


def decode_image(data: bytes, transform: Mapping[str, Any], channels: int = 3) -> Tensor:
    """One encoded image -> uint8 (channels, crop, crop): PIL decode, ``convert("RGB")`` (or
    ``convert("L")``, ITU-R 601-2 luma, for ``channels=1``), then torchvision's ``resize``
    (``transform["resize_size"]``, ``interpolation``, ``antialias``) and ``center_crop``
    (``crop_size``; none when it is None), as ``weights.transforms()`` does before it converts
    to float.

    Raises:
        OSError / PIL.UnidentifiedImageError / ValueError: the bytes are not a readable image.
    """
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB" if channels == 3 else "L")
    if transform.get("resize_size") is not None:
        img = TF.resize(
            img, list(transform["resize_size"]), interpolation=InterpolationMode(transform["interpolation"]),
            antialias=bool(transform.get("antialias", True)),
        )  # fmt: skip
    if transform.get("crop_size") is not None:
        img = TF.center_crop(img, list(transform["crop_size"]))
    return TF.pil_to_tensor(img)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _list_tar(val_tar: Path) -> tuple[dict[str, tarfile.TarInfo], tarfile.TarFile]:
    tar = tarfile.open(val_tar, "r:*")
    members = {}
    for m in tar:
        if m.isfile() and _is_image(m.name):
            members[os.path.basename(m.name)] = m
    return members, tar


def _list_tree(val_dir: Path) -> dict[str, tuple[str, Path]]:
    """id -> (wnid folder, path) for ``val_dir/<wnid>/<file>``. The id is the file name, or
    ``<wnid>/<file name>`` for a name that occurs in several classes (``ImageFolder``
    semantics: the same name in two classes is two images)."""
    entries = [(wnid_dir.name, f) for wnid_dir in sorted(p for p in val_dir.iterdir() if p.is_dir())
               for f in sorted(wnid_dir.iterdir()) if f.is_file() and _is_image(f.name)]  # fmt: skip
    count: dict[str, int] = {}
    for _, f in entries:
        count[f.name] = count.get(f.name, 0) + 1
    return {(f.name if count[f.name] == 1 else f"{wnid}/{f.name}"): (wnid, f) for wnid, f in entries}


def _select(names: Sequence[str], labels: Sequence[int], images_per_class: int | None) -> list[int]:
    """Positions (in file-name order) of the first ``images_per_class`` images of each class."""
    if images_per_class is None:
        return list(range(len(names)))
    seen: dict[int, int] = {}
    keep = []
    for i, y in enumerate(labels):
        if seen.get(y, 0) < images_per_class:
            seen[y] = seen.get(y, 0) + 1
            keep.append(i)
    return keep


def prepare_imagenet(
    out_dir: str | os.PathLike,
    transform: Mapping[str, Any],
    *,
    val_tar: str | os.PathLike | None = None,
    devkit: str | os.PathLike | None = None,
    val_dir: str | os.PathLike | None = None,
    images_per_class: int | None = None,
    shard_size: int = 5000,
    max_bad_fraction: float = 0.001,
    threads: int = 1,
    verify_checksums: bool = True,
    progress: bool = True,
    channels: int = 3,
) -> dict[str, Any]:
    """Decode the ImageNet validation images into shards (split ``val``) in ``out_dir``.

    Args:
        transform: :func:`netperturb.models.weights.transform_spec` of the weights the shards are for.
        val_tar, devkit: the official archives (labels from the devkit's ground truth).
        val_dir: instead of ``val_tar``: an extracted ``<wnid>/<file>`` tree (labels from the
            folder names); ``devkit`` is then optional and only fixes the class list (else the
            sorted folder names are the classes).
        images_per_class: keep only the first k images of each class (file-name order);
            None = all.
        shard_size: images per shard file.
        max_bad_fraction: largest tolerated fraction of unreadable images.
        threads: decoding threads (PIL releases the GIL while decoding and resizing).
        verify_checksums: check the archives' md5 against the official ones that torchvision
            lists (``torchvision.datasets.imagenet.ARCHIVE_META``).
        channels: 3 (RGB) or 1 (grayscale, ``PIL.Image.convert("L")``) for a 1-channel model.

    Images are stored in file-name order (``ILSVRC2012_val_00000001`` first), as uint8
    (N, channels, crop, crop); labels int64 (N,) = index of the wnid in sorted order. The manifest
    records the count, per-shard sha256, the transform, the class wnids and names, every
    stored file name in order, and the skipped files with the reason.

    Raises:
        FileNotFoundError: an input is missing (names it).
        ImageNetError: checksum mismatch, image count different from the ground truth, an
            image folder that is not a class, or too many unreadable images (lists some).
    """
    if val_dir is None and val_tar is None:
        raise ImageNetError("datasets.imagenet: set val_tar (with devkit) or val_dir")
    if val_dir is None and devkit is None:
        raise ImageNetError("datasets.imagenet.devkit: the devkit archive is needed to label val_tar")
    if val_dir is None:
        val_tar = Path(val_tar)
        if not val_tar.is_file():
            raise FileNotFoundError(f"datasets.imagenet.val_tar: {val_tar} does not exist")
        if verify_checksums:
            from torchvision.datasets.utils import check_md5

            name, md5 = _official_md5("val")
            log.info("checking the md5 of %s", val_tar)
            if not check_md5(str(val_tar), md5):
                raise ImageNetError(f"{val_tar}: md5 is not that of the official {name} ({md5})")
    wnid_to_classes: dict[str, tuple[str, ...]] | None = None
    val_wnids: list[str] | None = None
    if devkit is not None:
        wnid_to_classes, val_wnids = parse_devkit(devkit, verify_checksum=verify_checksums)

    tar = None
    if val_dir is not None:
        val_dir = Path(val_dir)
        if not val_dir.is_dir():
            raise FileNotFoundError(f"datasets.imagenet.val_dir: {val_dir} is not a folder")
        tree = _list_tree(val_dir)
        classes = sorted(wnid_to_classes) if wnid_to_classes else sorted({w for w, _ in tree.values()})
        index = {w: i for i, w in enumerate(classes)}
        unknown = sorted({w for w, _ in tree.values()} - set(index))
        if unknown:
            raise ImageNetError(f"{val_dir}: folders that are not devkit classes: {unknown[:5]}")
        names = sorted(tree, key=lambda k: (tree[k][1].name, k))  # file-name order; a shared name by class
        labels = [index[tree[n][0]] for n in names]
        source: dict[str, Any] = {"val_dir": str(val_dir)}
    else:
        members, tar = _list_tar(val_tar)
        names = sorted(members)
        if len(names) != len(val_wnids):
            tar.close()
            raise ImageNetError(
                f"{val_tar}: {len(names)} images, but the devkit's ground truth lists {len(val_wnids)}"
            )
        classes = sorted(wnid_to_classes)
        index = {w: i for i, w in enumerate(classes)}
        # torchvision's rule (parse_val_archive): the i-th file in sorted order has the i-th wnid
        labels = [index[w] for w in val_wnids]
        source = {"val_tar": str(val_tar)}

    keep = _select(names, labels, images_per_class)
    names = [names[i] for i in keep]
    labels = [labels[i] for i in keep]
    n = len(names)
    crop = [int(v) for v in transform["crop_size"]]
    h, w = (crop[0], crop[0]) if len(crop) == 1 else crop
    images = torch.empty((n, int(channels), h, w), dtype=torch.uint8)
    errors: dict[int, str] = {}

    def work(pos: int, data: bytes) -> None:
        try:
            images[pos] = decode_image(data, transform, channels)
        except Exception as e:  # any decoder error: the file is skipped and listed
            errors[pos] = f"{type(e).__name__}: " + re.sub(r" ?<_io\.BytesIO object at \w+>", "", str(e))

    def encoded() -> Iterator[tuple[int, bytes]]:
        if tar is not None:
            pos_of = {name: i for i, name in enumerate(names)}
            for m in sorted((members[name] for name in names), key=lambda m: m.offset_data):  # sequential reads
                f = tar.extractfile(m)
                yield pos_of[os.path.basename(m.name)], f.read()
        else:
            for i, name in enumerate(names):
                yield i, tree[name][1].read_bytes()

    log.info("decoding %d images with %d threads into %s", n, threads, out_dir)
    try:
        with ThreadPoolExecutor(max(1, int(threads))) as pool, tqdm(
            total=n, desc="decode", unit="img", disable=not progress, mininterval=10
        ) as bar:
            pending: set = set()
            for pos, data in encoded():
                pending.add(pool.submit(work, pos, data))
                if len(pending) >= 8 * max(1, int(threads)):
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    bar.update(len(done))
            for f in pending:
                f.result()
            bar.update(len(pending))
    finally:
        if tar is not None:
            tar.close()

    skipped = [{"file": names[i], "reason": errors[i]} for i in sorted(errors)]
    if n and len(skipped) / n > max_bad_fraction:
        listed = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:5])
        raise ImageNetError(
            f"{len(skipped)} of {n} images unreadable (> datasets.imagenet.max_bad_fraction "
            f"= {max_bad_fraction}): {listed}"
        )
    for s in skipped:
        log.warning("skipped %s: %s", s["file"], s["reason"])
    ok = [i for i in range(n) if i not in errors]
    for new, old in enumerate(ok):  # compact in place (no second copy of the images)
        if new != old:
            images[new] = images[old]
    images = images[: len(ok)]
    label_t = torch.tensor([labels[i] for i in ok], dtype=torch.int64)
    source.update(
        devkit=str(devkit) if devkit is not None else None,
        checksums_verified=bool(verify_checksums),
        transform=dict(transform),
        channels=int(channels),
        label_rule="index of the wnid among the sorted class wnids (torchvision's order)",
        images_per_class=images_per_class,
        class_names=[", ".join(wnid_to_classes[c]) if wnid_to_classes else c for c in classes],
        files=[names[i] for i in ok],
    )
    return write_shards(
        out_dir, {"val": (images, label_t)}, dataset="imagenet", num_classes=len(classes), classes=classes,
        preprocess=None, shard_size=shard_size, skipped=skipped, source=source,
    )  # fmt: skip
