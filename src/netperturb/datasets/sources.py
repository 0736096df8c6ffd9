"""Where the data comes from: a built-in dataset by name, or the config's own images.

``dataset`` in the config is either a name (``digits``, ``mnist``, ``cifar10``,
``tiny_imagenet``, ``imagenet``; :mod:`netperturb.datasets.registry`) or a mapping:

- ``{kind: image_folder, root, channels: 1|3, transform: {resize, crop, mean, std}}``: class
  folders (:mod:`netperturb.datasets.folder`);
- ``{kind: tensors, path: file.pt|file.npz, value_range, transform}``: images and labels in
  one file (:mod:`netperturb.datasets.tensors`).

:func:`plan_data` decides, before any job, the dataset's name (the ``dataset`` column), the
folder its shards go to (``resources/data/<name>-<key>/shards``, ``key`` a digest of the
settings that decide the shards' content, so that two settings never share shards), what the
jobs need to know (classes, channels, evaluation split, whether there is a training split) and
the parameters of the prepare rule (with a fingerprint of the images, so a changed image makes
the shards again). :func:`prepare_data_source` makes the shards (the ``prepare_data_source``
rule).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from netperturb.core.config import NAME_PATTERN, ConfigError
from netperturb.datasets.registry import dataset_info

__all__ = ["DATA_KINDS", "DataPlan", "plan_data", "prepare_data_source"]

#: The kinds of a ``dataset`` mapping.
DATA_KINDS = ("image_folder", "tensors")

#: Splits of the built-in datasets (ImageNet: the validation set only).
_BUILTIN_SPLITS = {"imagenet": ("val",)}


@dataclass(frozen=True)
class DataPlan:
    """The planned data of a run.

    Attributes:
        name: the ``dataset`` column of every table (a built-in's name; for a mapping its
            ``name``, default the folder's or file's name).
        kind: ``"builtin"``, ``"image_folder"`` or ``"tensors"``.
        shard_dir: the folder of the decoded shards.
        info: ``num_classes``, ``in_channels``, ``eval_split`` and ``splits`` (tuple).
        spec: the normalised mapping (None for a built-in), the prepare rule's parameters.
        inputs: files the prepare rule reads (the tensor file), for its ``input:``.
    """

    name: str
    kind: str
    shard_dir: str
    info: dict[str, Any]
    spec: dict[str, Any] | None = None
    inputs: list[str] = field(default_factory=list)

    @property
    def trainable(self) -> bool:
        """Whether models can be trained on it (it has a ``train`` split)."""
        return "train" in self.info["splits"]


def _name(value: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", value).lstrip(".-") or "data"
    return name if re.match(NAME_PATTERN, name) else f"data_{name}"


def _sizes(v, key: str) -> None:
    if v is None:
        return
    vals = [v] if isinstance(v, (int, float)) else list(v)
    if not 1 <= len(vals) <= 2 or any(not isinstance(x, int) or isinstance(x, bool) or x < 1 for x in vals):
        raise ConfigError(f"{key}: give a positive integer or [height, width], got {v!r}")


def _check_transform(t: Mapping[str, Any] | None, channels: int | None, key: str) -> dict[str, Any]:
    t = dict(t or {})
    unknown = sorted(set(t) - {"resize", "crop", "mean", "std"})
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown; a transform has resize, crop, mean, std")
    _sizes(t.get("resize"), f"{key}.resize")
    _sizes(t.get("crop"), f"{key}.crop")
    if (t.get("mean") is None) != (t.get("std") is None):
        raise ConfigError(f"{key}: give mean and std together (of the [0, 1] images, per channel)")
    if t.get("mean") is not None:
        mean, std = list(t["mean"]), list(t["std"])
        if len(mean) != len(std) or (channels and len(mean) not in (1, channels)) or any(s <= 0 for s in std):
            raise ConfigError(f"{key}: mean {mean} and std {std} need the same length (1 or {channels or 'C'}) and std > 0")
    return t


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def plan_data(config: Mapping[str, Any]) -> DataPlan:
    """The :class:`DataPlan` of ``config["dataset"]`` (validated, defaults filled).

    Raises:
        ConfigError: an unknown kind or key, a missing folder or file, a folder without class
            folders, a tensor file without images and labels, a bad transform (names the key
            under ``dataset`` and the remedy).
    """
    ds = config["dataset"]
    if isinstance(ds, str):
        info = dataset_info(ds)
        info["splits"] = _BUILTIN_SPLITS.get(ds, ("train", "test"))
        if ds == "imagenet":
            info["in_channels"] = int((config.get("datasets", {}).get("imagenet") or {}).get("channels", 3))
        return DataPlan(ds, "builtin", f"resources/data/{ds}/shards", info)
    if not isinstance(ds, Mapping):
        raise ConfigError(f"dataset: give a dataset name or a mapping with kind: {' or '.join(DATA_KINDS)}")
    kind = ds.get("kind")
    if kind == "image_folder":
        return _plan_folder(ds)
    if kind == "tensors":
        return _plan_tensors(ds)
    raise ConfigError(f"dataset.kind: {kind!r} unknown; allowed: {', '.join(DATA_KINDS)}")


def _plan_folder(ds: Mapping[str, Any]) -> DataPlan:
    from netperturb.datasets.folder import FolderError, folder_fingerprint, folder_layout

    allowed = {"kind", "root", "name", "channels", "transform", "max_bad_fraction", "shard_size", "threads"}
    unknown = sorted(set(ds) - allowed)
    if unknown:
        raise ConfigError(f"dataset.{unknown[0]}: not a key of an image_folder dataset ({', '.join(sorted(allowed))})")
    if not ds.get("root"):
        raise ConfigError("dataset.root: the folder of class folders is not set")
    channels = int(ds.get("channels", 3))
    if channels not in (1, 3):
        raise ConfigError(f"dataset.channels: {channels}; give 1 (grayscale) or 3 (RGB)")
    transform = _check_transform(ds.get("transform"), channels, "dataset.transform")
    try:
        layout = folder_layout(ds["root"])
    except FolderError as e:
        raise ConfigError(str(e)) from None
    root = Path(ds["root"])
    name = _name(ds.get("name") or root.resolve().name)
    settings = {"kind": "image_folder", "root": str(root.resolve()), "channels": channels, "transform": transform}
    spec = {**settings, "root": str(ds["root"]), "name": name, "max_bad_fraction": float(ds.get("max_bad_fraction", 0.0)),
            "shard_size": int(ds.get("shard_size", 10_000)), "fingerprint": folder_fingerprint(root)}  # fmt: skip
    splits = tuple(layout["splits"])
    info = {"num_classes": len(layout["classes"]), "in_channels": channels, "eval_split": "test", "splits": splits}
    return DataPlan(name, "image_folder", f"resources/data/{name}-{_digest(settings)}/shards", info, spec)


def _plan_tensors(ds: Mapping[str, Any]) -> DataPlan:
    from netperturb.datasets.tensors import TensorFileError, tensor_file_layout

    allowed = {"kind", "path", "name", "value_range", "transform", "num_classes", "shard_size"}
    unknown = sorted(set(ds) - allowed)
    if unknown:
        raise ConfigError(f"dataset.{unknown[0]}: not a key of a tensors dataset ({', '.join(sorted(allowed))})")
    if not ds.get("path"):
        raise ConfigError("dataset.path: the .pt or .npz file with images and labels is not set")
    path = Path(ds["path"])
    if path.suffix not in (".pt", ".pth", ".npz"):
        raise ConfigError(f"dataset.path: {path} is neither .pt / .pth (torch.save) nor .npz (numpy.savez)")
    try:
        layout = tensor_file_layout(path)
    except TensorFileError as e:
        raise ConfigError(str(e)) from None
    vr = ds.get("value_range")
    if vr is not None and (len(vr) != 2 or float(vr[0]) != 0 or float(vr[1]) <= 0):
        raise ConfigError(f"dataset.value_range: give [0, max] with max > 0, got {vr!r}")
    channels = layout["shape"][0]
    transform = _check_transform(ds.get("transform"), channels, "dataset.transform")
    num_classes = int(ds.get("num_classes") or layout["num_classes"])
    if num_classes < layout["num_classes"]:
        raise ConfigError(f"dataset.num_classes: {num_classes}, but {path} has labels up to {layout['num_classes'] - 1}")
    name = _name(ds.get("name") or path.stem)
    settings = {"kind": "tensors", "path": str(path.resolve()), "value_range": vr, "transform": transform,
                "num_classes": num_classes}  # fmt: skip
    spec = {**settings, "path": str(path), "name": name, "shard_size": int(ds.get("shard_size", 10_000))}
    info = {"num_classes": num_classes, "in_channels": channels, "eval_split": "test", "splits": tuple(layout["splits"])}
    return DataPlan(name, "tensors", f"resources/data/{name}-{_digest(settings)}/shards", info, spec, [str(path)])


def prepare_data_source(out_dir: str | os.PathLike, spec: Mapping[str, Any], *, threads: int = 1) -> dict[str, Any]:
    """Make the shards of a ``dataset`` mapping (a :class:`DataPlan`'s ``spec``) in ``out_dir``.

    Raises:
        netperturb.datasets.folder.FolderError, netperturb.datasets.tensors.TensorFileError:
            see :func:`~netperturb.datasets.folder.prepare_image_folder` and
            :func:`~netperturb.datasets.tensors.prepare_tensor_file`.
    """
    if spec["kind"] == "image_folder":
        from netperturb.datasets.folder import prepare_image_folder

        return prepare_image_folder(out_dir, spec, threads=threads)
    if spec["kind"] == "tensors":
        from netperturb.datasets.tensors import prepare_tensor_file

        return prepare_tensor_file(out_dir, spec)
    raise ValueError(f"dataset.kind: {spec['kind']!r} unknown; allowed: {', '.join(DATA_KINDS)}")
