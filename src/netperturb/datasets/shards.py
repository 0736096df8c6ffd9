"""Decoded datasets as uint8 shards (the preprocessing that goes with them: :mod:`netperturb.core.preprocess`).

The Design page of the docs, "The engine" 1: images are decoded once into uint8 tensors
(N x C x H x W) with int64 labels, written as shards with a manifest; everything a model
needs on top of that (scaling to [0, 1], a resize, mean/std normalisation) is done on the
device by :class:`~netperturb.core.preprocess.Preprocess`.

Shard folder layout (``format: netperturb-shards/1``)::

    <dir>/manifest.json
    <dir>/<split>-00000.pt   {"images": uint8 (n, C, H, W), "labels": int64 (n,)}
    <dir>/<split>-00001.pt   ...

The manifest records, per split, the count and every shard's file name, count and sha256,
plus ``num_classes``, ``classes``, ``preprocess`` (the :class:`Preprocess` that models
trained on this data should use), ``skipped`` (files that could not be read, with the
reason) and free-form ``source`` information.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from netperturb.core.io import sha256_file, torch_save, write_json
from netperturb.core.preprocess import Preprocess

__all__ = ["SHARD_FORMAT", "ShardError", "write_shards", "read_manifest", "load_split", "split_digest", "data_digest"]


SHARD_FORMAT = "netperturb-shards/1"


class ShardError(RuntimeError):
    """A shard folder is missing, incomplete or does not match its manifest."""


def write_shards(
    out_dir: str | os.PathLike,
    splits: dict[str, tuple[Tensor, Tensor]],
    *,
    dataset: str,
    num_classes: int,
    classes: Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
    shard_size: int = 10_000,
    skipped: Sequence[dict[str, str]] = (),
    source: dict[str, Any] | None = None,
    value_range: Sequence[float] | None = None,
    normalisation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``splits`` (name -> (images uint8 (N, C, H, W), labels int64 (N,))) as shards.

    ``value_range`` ([0, max]: the stored value that means full brightness) is recorded in the
    manifest; by default 1 / ``preprocess.scale`` (16 for the digits), else [0, 255].
    ``normalisation`` (``{"mean", "std"}``) is recorded when the dataset's config gives one;
    a model expecting another is refused (:func:`netperturb.models.expects.resolve_inputs`).

    Every file is written atomically; the manifest last, so a folder with a manifest is
    complete. Returns the manifest dict.

    Raises:
        ValueError: wrong dtype/shape, mismatched counts, or a label outside
            [0, num_classes).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": SHARD_FORMAT,
        "dataset": dataset,
        "num_classes": int(num_classes),
        "classes": list(classes) if classes is not None else [str(i) for i in range(num_classes)],
        "preprocess": preprocess.to_dict() if preprocess is not None else None,
        "shard_size": int(shard_size),
        "splits": {},
        "skipped": list(skipped),
        "source": source or {},
        "value_range": [0, float(value_range[1])] if value_range is not None
        else [0, round(1 / preprocess.scale, 6) if preprocess is not None else 255.0],
    }
    if normalisation:
        manifest["normalisation"] = {"mean": list(normalisation["mean"]), "std": list(normalisation["std"])}
    for split, (images, labels) in splits.items():
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"split {split!r}: images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
            raise ValueError(f"split {split!r}: labels must be int64 ({images.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"split {split!r}: labels outside [0, {num_classes})")
        entries = []
        for i, start in enumerate(range(0, max(len(labels), 1), shard_size)):
            name = f"{split}-{i:05d}.pt"
            chunk = {
                "images": images[start : start + shard_size].contiguous().clone(),
                "labels": labels[start : start + shard_size].contiguous().clone(),
            }
            torch_save(chunk, out / name)
            entries.append({"file": name, "count": int(chunk["labels"].numel()), "sha256": sha256_file(out / name)})
        manifest["splits"][split] = {
            "count": int(labels.numel()),
            "shape": list(images.shape[1:]),
            "shards": entries,
        }
    write_json(manifest, out / "manifest.json")
    return manifest


def read_manifest(shard_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``<shard_dir>/manifest.json``.

    Raises:
        ShardError: the manifest is missing, unreadable or of another format.
    """
    path = Path(shard_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path}: no shard manifest (run the prepare rule first)") from None
    except json.JSONDecodeError as e:
        raise ShardError(f"{path}: unreadable manifest ({e})") from None
    if manifest.get("format") != SHARD_FORMAT:
        raise ShardError(f"{path}: format {manifest.get('format')!r}, expected {SHARD_FORMAT!r}")
    return manifest


def split_digest(manifest: dict[str, Any], split: str) -> str:
    """The data's provenance id (the ``data_digest`` column of result tables, like ``weights``):
    the first 12 hex digits of the sha256 of the split's shard list in the manifest (each
    shard's file name, image count and sha256, in order). :func:`load_split` checks every shard
    it loads against that list, so equal ids mean the same images and labels.

    Raises:
        ShardError: the manifest has no such split.
    """
    try:
        shards = manifest["splits"][split]["shards"]
    except KeyError:
        raise ShardError(f"no split {split!r} in the manifest (has {sorted(manifest.get('splits', {}))})") from None
    canon = json.dumps([[e["file"], int(e["count"]), e["sha256"]] for e in shards], separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:12]


def data_digest(shard_dir: str | os.PathLike, split: str) -> str:
    """:func:`split_digest` of ``<shard_dir>/manifest.json``.

    Raises:
        ShardError: see :func:`read_manifest`, :func:`split_digest`.
    """
    try:
        return split_digest(read_manifest(shard_dir), split)
    except ShardError as e:
        raise ShardError(f"{shard_dir}: {e}" if not str(e).startswith(str(shard_dir)) else str(e)) from None


def _remedy(shard_dir: Path) -> str:
    return (
        f"Remedy: the shards are made by the workflow's prepare rule from the dataset's files: delete the folder "
        f"(rm -r {shard_dir}) and run the same command again; the prepare rule decodes the dataset again (the same "
        "files give the same shards and data digest) and Snakemake reruns the jobs that read the remade folder."
    )


def load_split(
    shard_dir: str | os.PathLike,
    split: str,
    *,
    limit: int | None = None,
    verify: bool = True,
) -> tuple[Tensor, Tensor]:
    """Load one split into memory: (images uint8 (N, C, H, W), labels int64 (N,)).

    Each shard file is read once; with ``verify`` (the default, as every job loads its data)
    the sha256 of exactly those bytes is compared with the manifest's before they are
    deserialised, so a shard replaced after the manifest was written (another split's file,
    a truncated copy) stops the job instead of being used. Cost: one sha256 pass over the
    bytes read (bench/shard_digest.py measures it).

    Args:
        limit: keep only the first ``limit`` images (shards are read lazily up to it).
        verify: check each shard's sha256 against the manifest.

    Raises:
        ShardError: unknown split, a missing, unreadable or damaged shard (sha256, count,
            content): the message names the file and the remedy.
    """
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir)
    if split not in manifest["splits"]:
        raise ShardError(f"{shard_dir}: no split {split!r} (has {sorted(manifest['splits'])})")
    images, labels, have = [], [], 0
    for entry in manifest["splits"][split]["shards"]:
        if limit is not None and have >= limit:
            break
        path = shard_dir / entry["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ShardError(f"{path}: shard listed in the manifest is missing. {_remedy(shard_dir)}") from None
        except OSError as e:
            raise ShardError(f"{path}: cannot be read ({e.strerror or e}). {_remedy(shard_dir)}") from None
        if verify:
            digest = hashlib.sha256(data).hexdigest()
            if digest != entry["sha256"]:
                raise ShardError(
                    f"{path}: sha256 {digest[:16]}... differs from the {entry['sha256'][:16]}... recorded in "
                    f"{shard_dir / 'manifest.json'} when the shards were written ({len(data)} B now): the file was "
                    f"replaced or damaged after it was made. {_remedy(shard_dir)}"
                )
        try:
            chunk = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            n = chunk["labels"].numel()
        except Exception as e:  # a damaged zip archive: torch raises RuntimeError / OSError / KeyError ...
            raise ShardError(f"{path}: not a readable shard ({type(e).__name__}: {str(e)[:120]}). {_remedy(shard_dir)}") from None
        del data
        if n != entry["count"]:
            raise ShardError(f"{path}: {n} images, manifest says {entry['count']}. {_remedy(shard_dir)}")
        images.append(chunk["images"])
        labels.append(chunk["labels"])
        have += entry["count"]
    if not images:
        shape = manifest["splits"][split].get("shape", [0, 0, 0])
        return torch.empty((0, *shape), dtype=torch.uint8), torch.empty(0, dtype=torch.long)
    x, y = torch.cat(images), torch.cat(labels)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y


def _normalisation(x_train: Tensor, scale: float, size: int | None) -> Preprocess:
    """Per-channel mean/std of the training split after scaling (and resizing)."""
    raw = Preprocess(scale=scale, mean=(0.0,), std=(1.0,), size=size)(x_train)
    mean = raw.mean(dim=(0, 2, 3)).tolist()
    std = raw.std(dim=(0, 2, 3)).tolist()
    return Preprocess(scale=scale, mean=tuple(round(m, 6) for m in mean), std=tuple(round(v, 6) for v in std), size=size)
