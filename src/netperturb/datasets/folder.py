"""A folder of images in class folders (``torchvision.datasets.ImageFolder`` layout) -> uint8 shards.

Two layouts:

- ``<root>/<class>/<file>``: one split, ``test``, for evaluation only (the models then come
  from files: nothing can be trained on it);
- ``<root>/train/<class>/<file>`` and ``<root>/test/<class>/<file>`` (the only two sub-folders
  of ``root``): a training and a test split; the classes are the training split's.

As ``ImageFolder``: the classes are the sorted class-folder names and a class's index is its
position among them; the files are those with an image extension
(``torchvision.datasets.folder.IMG_EXTENSIONS``); the same file name in two classes is two
images. Every image is decoded once by PIL, converted to RGB or to grayscale (``L``, ITU-R
601-2 luma) for ``channels: 1``, resized (``transform.resize``: the shorter side, or [H, W];
bilinear with antialiasing, torchvision's ``Resize``) and centre-cropped (``transform.crop``),
then stored as uint8 (N, C, H, W) with values 0..255 (the manifest's ``value_range``
[0, 255]). ``transform.mean`` / ``.std`` (of the [0, 1] images) are recorded as the data's
normalisation. Unreadable files are skipped and listed in the manifest with the reason; more
than ``max_bad_fraction`` of them is an error that lists them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import torch

from netperturb.core.preprocess import Preprocess
from netperturb.datasets.shards import write_shards

__all__ = ["FolderError", "folder_layout", "folder_fingerprint", "decode_transform", "channel_stats", "prepare_image_folder"]

log = logging.getLogger("netperturb")


class FolderError(ValueError):
    """The image folder's layout or images do not make a dataset (names the folder or file)."""


def _extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return tuple(IMG_EXTENSIONS)


def _classes(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def folder_layout(root: str | os.PathLike, key: str = "dataset.root") -> dict[str, Any]:
    """The splits and classes of an image folder, from its folder names alone (cheap: the
    workflow calls it when it plans the jobs).

    Returns:
        ``{"splits": {"test": <folder>} or {"train": ..., "test": ...}, "classes": [...]}``.

    Raises:
        FolderError: ``root`` is not a folder, has no class folders, or a test class is not a
            training class (names ``key`` and the folder).
    """
    root = Path(root)
    if not root.is_dir():
        raise FolderError(f"{key}: {root} is not a folder")
    subs = _classes(root)
    if set(subs) == {"train", "test"}:
        splits = {"train": root / "train", "test": root / "test"}
        classes = _classes(root / "train")
        extra = sorted(set(_classes(root / "test")) - set(classes))
        if extra:
            raise FolderError(f"{key}: {root / 'test'} has classes that {root / 'train'} does not: {extra[:5]}")
    else:
        splits = {"test": root}
        classes = subs
    if not classes:
        raise FolderError(f"{key}: {root} has no class folders (expected <root>/<class>/<image> or "
                          "<root>/train/<class>/<image> with <root>/test/<class>/<image>)")  # fmt: skip
    return {"splits": {k: str(v) for k, v in splits.items()}, "classes": classes}


def _samples(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    exts = _extensions()
    out = []
    for i, c in enumerate(classes):
        d = folder / c
        if not d.is_dir():
            continue
        for dirpath, _, files in sorted(os.walk(d, followlinks=True)):
            for f in sorted(files):
                if f.lower().endswith(exts):
                    out.append((Path(dirpath) / f, i))
    return out


def folder_fingerprint(root: str | os.PathLike) -> str:
    """16 hex digits of the sha256 of every file's relative path, size and modification time
    under ``root``: the folder's content as far as a listing tells (a changed image, added or
    removed file changes it), without reading the images."""
    h = hashlib.sha256()
    root = Path(root)
    for dirpath, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for f in sorted(files):
            p = Path(dirpath) / f
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def decode_transform(transform: Mapping[str, Any] | None) -> dict[str, Any]:
    """``dataset.transform`` (``resize``, ``crop``) as the transform spec of
    :func:`netperturb.datasets.imagenet.decode_image` (bilinear, antialias)."""
    t = transform or {}

    def size(v):
        return None if v is None else ([int(v)] if isinstance(v, (int, float)) else [int(x) for x in v])

    return {"resize_size": size(t.get("resize")), "crop_size": size(t.get("crop")), "interpolation": "bilinear",
            "antialias": True}  # fmt: skip


def channel_stats(images: torch.Tensor, scale: float, chunk: int = 4096) -> Preprocess:
    """Per-channel mean and (sample) standard deviation of ``images * scale`` (uint8 (N, C, H, W)),
    in float64 over chunks, rounded to 6 decimals: the normalisation of a model trained here."""
    n = images.shape[0] * images.shape[2] * images.shape[3]
    s = torch.zeros(images.shape[1], dtype=torch.float64)
    ss = torch.zeros_like(s)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float64) * scale
        s += x.sum(dim=(0, 2, 3))
        ss += (x * x).sum(dim=(0, 2, 3))
    mean = s / n
    std = ((ss - n * mean * mean) / max(n - 1, 1)).clamp_min(0).sqrt()
    return Preprocess(scale=scale, mean=tuple(round(float(m), 6) for m in mean), std=tuple(round(float(v), 6) for v in std))


def prepare_image_folder(
    out_dir: str | os.PathLike,
    spec: Mapping[str, Any],
    *,
    threads: int = 1,
) -> dict[str, Any]:
    """Decode an image folder into shards in ``out_dir``.

    Args:
        spec: ``dataset`` of the config: ``root``, ``name``, ``channels`` (1 or 3),
            ``transform`` (``resize``, ``crop``, ``mean``, ``std``), ``max_bad_fraction``,
            ``shard_size``.
        threads: decoding threads.

    Returns:
        The manifest: ``value_range`` [0, 255], the normalisation given, ``preprocess`` for
        models trained here (scale 1/255 and the given mean/std, else the training split's
        per-channel mean and std, else 0 and 1), the classes, ``source`` with the root, the
        layout, the transform and every stored file (relative to its split folder) in order.

    Raises:
        FolderError: see :func:`folder_layout`; images of different sizes without
            ``transform.resize`` / ``crop``; too many unreadable images; an empty split.
    """
    from netperturb.datasets.imagenet import decode_image

    layout = folder_layout(spec["root"])
    classes = layout["classes"]
    channels = int(spec.get("channels", 3))
    transform = decode_transform(spec.get("transform"))
    max_bad = float(spec.get("max_bad_fraction", 0.0))
    splits, skipped, files = {}, [], {}
    for split, folder in layout["splits"].items():
        folder = Path(folder)
        samples = _samples(folder, classes)
        if not samples:
            raise FolderError(f"dataset.root: {folder} holds no images ({', '.join(_extensions())})")

        def work(sample):
            path, _ = sample
            try:
                return decode_image(path.read_bytes(), transform, channels), None
            except Exception as e:  # any decoder error: the file is skipped and listed
                return None, f"{type(e).__name__}: {e}"

        with ThreadPoolExecutor(max(1, int(threads))) as pool:
            decoded = list(pool.map(work, samples))
        bad = [(p, why) for (p, _), (_, why) in zip(samples, decoded) if why is not None]
        skipped += [{"file": str(p.relative_to(folder)), "split": split, "reason": why} for p, why in bad]
        if len(bad) / len(samples) > max_bad:
            listed = "; ".join(f"{p}: {why}" for p, why in bad[:5])
            raise FolderError(f"{len(bad)} of {len(samples)} images in {folder} unreadable (> dataset.max_bad_fraction "
                              f"= {max_bad}): {listed}")  # fmt: skip
        good = [(p, y, img) for (p, y), (img, _) in zip(samples, decoded) if img is not None]
        shapes = {tuple(img.shape) for _, _, img in good}
        if len(shapes) > 1:
            first = good[0]
            other = next(g for g in good if tuple(g[2].shape) != tuple(first[2].shape))
            raise FolderError(
                f"dataset.root: images of different sizes: {first[0]} is {tuple(first[2].shape[1:])}, {other[0]} is "
                f"{tuple(other[2].shape[1:])}. Remedy: set dataset.transform.resize and .crop (e.g. resize: 256, "
                "crop: 224) so that every image is decoded to one size."
            )
        splits[split] = (torch.stack([img for _, _, img in good]), torch.tensor([y for _, y, _ in good], dtype=torch.int64))
        files[split] = [str(p.relative_to(folder)) for p, _, _ in good]
        for p, why in bad:
            log.warning("skipped %s: %s", p, why)
    t = spec.get("transform") or {}
    given = {"mean": list(t["mean"]), "std": list(t["std"])} if t.get("mean") is not None else None
    if given:
        pre = Preprocess(scale=1 / 255, mean=tuple(given["mean"]), std=tuple(given["std"]), size=None)
    elif "train" in splits:
        pre = channel_stats(splits["train"][0], 1 / 255)
    else:
        pre = Preprocess(scale=1 / 255, mean=(0.0,), std=(1.0,), size=None)
    return write_shards(
        out_dir, splits, dataset=spec["name"], num_classes=len(classes), classes=classes, preprocess=pre,
        shard_size=int(spec.get("shard_size", 10_000)), skipped=skipped,
        source={"kind": "image_folder", "root": str(spec["root"]), "layout": sorted(layout["splits"]),
                "channels": channels, "transform": dict(t), "decode": transform, "files": files},
        value_range=[0, 255], normalisation=given,
    )  # fmt: skip
