"""Where each configured model comes from, planned before any job runs.

``models.<name>.source`` (the command line's ``--source``) is one of

===============  =====================================================  ===========================
source           what is given                                           file the jobs read
===============  =====================================================  ===========================
``netperturb``   ``arch`` + ``train``: trained here (the default)        ``results/<run>/models/<name>.pt``
                 (or ``file``: a netperturb checkpoint made elsewhere)
``torchvision``  ``arch`` + ``weights`` (a torchvision weights name;     ``resources/weights/<official name>``
                 the default source when ``weights`` is given)           (downloaded) or ``weights_file``
``timm``         ``arch`` (a timm model name) + ``weights_file``         ``weights_file``
``python``       ``factory`` (``package.module:function`` or             ``weights_file``
                 ``file.py:function``), ``kwargs`` + ``weights_file``
                 (a ``state_dict``, ``.pt`` or ``.safetensors``)
``torchscript``  ``file`` (``torch.jit.save``)                           ``file``
``exported``     ``file`` (``torch.export.save``, ``.pt2``)              ``file``
===============  =====================================================  ===========================

A model given as a file is never trained by the workflow (no ``train`` job). Its file is the
user's: its sha256 is computed when the jobs are planned (once; :mod:`netperturb.models.digests`)
and goes into every job's parameters and the ``weights`` column (first 12 hex digits); a job
that finds the file changed stops with "changed since planned" and the remedy. Every source may
take ``preprocess`` (``value_range``, ``mean``, ``std``, ``input_size``) to say or override what
input the model expects (:mod:`netperturb.models.expects`).

:func:`parse_model_spec` checks one model's keys (the config and the command line share it);
:func:`plan_sources` plans every model of the config: which file each job reads, what
``load_model`` needs besides it, and for ImageNet which decoded shard variant (resize + crop)
each model reads.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from netperturb.core.config import ConfigError
from netperturb.models.weights import resolve_model_source, transform_key

__all__ = ["SOURCES", "source_kind", "parse_model_spec", "PlannedModel", "SourcePlan", "plan_sources"]

#: The model sources.
SOURCES = ("netperturb", "torchvision", "timm", "python", "torchscript", "exported")

_COMMON = {"source", "layers", "preprocess", "arch"}
#: Keys each source takes besides ``source``, ``layers``, ``preprocess`` and ``arch``.
_KEYS = {
    "netperturb": {"train", "input_size", "file"},
    "torchvision": {"weights", "weights_url", "weights_file"},
    "timm": {"weights_file", "kwargs"},
    "python": {"factory", "kwargs", "weights_file"},
    "torchscript": {"file"},
    "exported": {"file"},
}
_REQUIRED = {"netperturb": ("arch",), "torchvision": ("arch", "weights"), "timm": ("arch", "weights_file"),
             "python": ("factory", "weights_file"), "torchscript": ("file",), "exported": ("file",)}  # fmt: skip
_PREPROCESS_KEYS = {"value_range", "mean", "std", "input_size"}


def source_kind(cfg: Mapping[str, Any]) -> str:
    """``cfg["source"]``, else ``torchvision`` when ``weights`` is given, else ``netperturb``."""
    return cfg.get("source") or ("torchvision" if cfg.get("weights") else "netperturb")


def _field(key: str, name: str) -> str:
    return f"--{name.replace('_', '-')}" if key == "--" else f"{key}.{name}"


@dataclass(frozen=True)
class PlannedModel:
    """One planned model.

    Attributes:
        name: the config key (the ``model`` column).
        kind: its source.
        path: the file its jobs read; None for a model trained here (its checkpoint
            ``results/<run>/models/<name>.pt``).
        load: what :func:`netperturb.models.checkpoints.load_model` needs besides the file (None:
            a checkpoint made here, nothing else); these are the jobs' parameters, so neither the
            URL nor the file's path is in them (a mirror or a moved file reruns nothing), but a
            user's file's sha256 is (a replaced file reruns the jobs that used it).
        transform: the ImageNet decoding transform (resize + crop) of its inputs, when known.
        download: the torchvision download (url, sha256 prefix), when the workflow fetches the file.
    """

    name: str
    kind: str
    path: str | None
    load: dict[str, Any] | None
    transform: dict[str, Any] | None = None
    download: dict[str, Any] | None = None

    @property
    def trained_here(self) -> bool:
        """Whether the workflow trains it (``netperturb`` without ``file``)."""
        return self.path is None

    @property
    def user_file(self) -> bool:
        """Whether its file is the user's (given in the config), not made or fetched here."""
        return self.path is not None and self.download is None


def parse_model_spec(
    name: str, cfg: Mapping[str, Any], *, num_classes: int, in_channels: int, key: str | None = None,
    weights_dir: str = "resources/weights", digest: bool = True,
) -> PlannedModel:  # fmt: skip
    """Check one model spec (a ``models.<name>`` mapping, or the command line's options as
    one) and plan it.

    Args:
        name: the model's name.
        cfg: the spec.
        num_classes, in_channels: the dataset's (timm builds its head and stem for them;
            torchvision weights must have as many classes).
        key: how messages name the spec (default ``models.<name>``; ``"--"`` names the
            command line's options, ``--weights-file``).
        digest: compute a user file's sha256 (for the jobs' parameters).

    Raises:
        ConfigError: an unknown source, a key the source does not take (a model given as a
            file is never trained: ``train`` is refused), a missing key or file, a bad
            ``preprocess``, torchvision weights that do not exist or do not fit the dataset.
            The message names the key.
    """
    key = key or f"models.{name}"
    kind = source_kind(cfg)
    if kind not in SOURCES:
        raise ConfigError(f"{_field(key, 'source')}: {kind!r} unknown; allowed: {', '.join(SOURCES)}")
    allowed = _KEYS[kind] | _COMMON
    for k in cfg:
        if k not in allowed and cfg[k] is not None:
            why = " (a model given as a file is never trained here)" if k in ("train", "input_size") else ""
            raise ConfigError(f"{_field(key, k)}: not used with source {kind}{why}; {kind} takes "
                              f"{', '.join(sorted(_KEYS[kind] | {'arch', 'preprocess', 'layers'}))}")  # fmt: skip
    required = _REQUIRED[kind] if not (kind == "netperturb" and cfg.get("file")) else ("file",)
    for k in required:
        if not cfg.get(k):
            raise ConfigError(f"{_field(key, k)}: required with source {kind}")
    pre = cfg.get("preprocess")
    if pre is not None:
        bad = sorted(set(pre) - _PREPROCESS_KEYS)
        if bad:
            raise ConfigError(f"{_field(key, 'preprocess')}.{bad[0]}: unknown; allowed: {', '.join(sorted(_PREPROCESS_KEYS))}")
        from netperturb.models.expects import InputSpec, apply_overrides

        try:
            apply_overrides(InputSpec(remedy_key=_field(key, "preprocess")), pre)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if kind == "torchvision":
        try:
            src = resolve_model_source(name, cfg, num_classes=num_classes, weights_dir=weights_dir)
        except ConfigError as e:
            raise ConfigError(str(e).replace(f"models.{name}", key) if key != f"models.{name}" else str(e)) from None
        load = {k: src[k] for k in ("arch", "weights", "sha256_prefix")}
        if pre:
            load |= {"source": "torchvision", "key": key, "preprocess": dict(pre)}
        return PlannedModel(name, kind, src["path"], load, src["transform"], src if src["download"] else None)
    if kind == "netperturb" and not cfg.get("file"):
        load = {"source": "netperturb", "key": key, "preprocess": dict(pre)} if pre else None
        return PlannedModel(name, kind, None, load)
    field = "weights_file" if kind in ("timm", "python") else "file"
    path = str(cfg[field])
    if not os.path.isfile(path):
        raise ConfigError(f"{_field(key, field)}: {path} does not exist (relative paths are from {os.getcwd()})")
    load: dict[str, Any] = {"source": kind, "key": key}
    for k in ("arch", "factory", "kwargs"):
        if cfg.get(k) is not None:
            load[k] = cfg[k] if k != "kwargs" else dict(cfg[k])
    if kind == "timm":
        load |= {"num_classes": int(num_classes), "in_channels": int(in_channels)}
    if pre:
        load["preprocess"] = dict(pre)
    if digest:
        from netperturb.models.digests import file_digest

        load["sha256"] = file_digest(path)
    return PlannedModel(name, kind, path, load)


def _imagenet_transform(kind: str, load: Mapping[str, Any]) -> dict[str, Any]:
    """How ImageNet is decoded for a model not from torchvision: a timm model's pretrained
    config (resize floor(size / crop_pct), centre crop size, its interpolation), else the
    usual 256 / 224 bilinear, or for ``preprocess.input_size`` s: resize floor(s / 0.875), crop s."""
    size, pct, interp = 224, 0.875, "bilinear"
    if kind == "timm":
        try:
            from timm.data import resolve_data_config

            from netperturb.models.external import build_module

            cfg = resolve_data_config({}, model=build_module(load, device="meta"))
            size, pct, interp = int(cfg["input_size"][1]), float(cfg.get("crop_pct") or 1.0), str(cfg["interpolation"])
        except Exception:  # no timm, or the architecture does not build: the job says why
            pass
    s = (load.get("preprocess") or {}).get("input_size")
    if s is not None:
        size = int(s if isinstance(s, (int, float)) else s[0])
    spec = {"resize_size": [int(math.floor(size / pct))], "crop_size": [size], "interpolation": interp, "antialias": True}
    return spec


@dataclass(frozen=True)
class SourcePlan:
    """The planned inputs of every configured model.

    Attributes:
        dataset: the dataset's name.
        models: model name -> :class:`PlannedModel`.
        data_shard_dir: the shard folder of a dataset other than ImageNet.
        imagenet_variants: shard variant (``<transform_key>[-<n>-per-class][-1ch]``) -> transform spec.
        weight_downloads: file name under resources/weights/ -> the torchvision source that fetches it.
        imagenet_suffix: the variant suffix.
    """

    dataset: str
    models: dict[str, PlannedModel]
    data_shard_dir: str
    imagenet_variants: dict[str, dict[str, Any]]
    weight_downloads: dict[str, dict[str, Any]]
    imagenet_suffix: str

    def shard_dir(self, model: str | None = None) -> str:
        """Folder of the decoded shards a model reads (ImageNet: those of its transform)."""
        if self.dataset == "imagenet" and model is not None:
            key = transform_key(self.models[model].transform) + self.imagenet_suffix
            return f"resources/data/imagenet/{key}/shards"
        return self.data_shard_dir

    def checkpoint(self, model: str, run_dir: str) -> str:
        """The file a model's jobs read: our checkpoint (trained here) or the given / fetched file."""
        planned = self.models[model]
        return planned.path if planned.path is not None else f"{run_dir}/models/{model}.pt"

    def load_source(self, model: str) -> dict[str, Any] | None:
        """What ``load_model`` needs besides the file (:attr:`PlannedModel.load`)."""
        return self.models[model].load

    def trained_here(self) -> list[str]:
        """The models the workflow trains."""
        return [m for m, p in self.models.items() if p.trained_here]


def plan_sources(config: Mapping[str, Any], *, num_classes: int, in_channels: int | None = None,
                 data: Any = None) -> SourcePlan:  # fmt: skip
    """Plan every model of ``config["models"]``.

    Args:
        num_classes, in_channels: the dataset's.
        data: the :class:`netperturb.datasets.sources.DataPlan` (its shard folder, whether it
            has a training split); None: a built-in dataset named by ``config["dataset"]``.

    Raises:
        ConfigError: see :func:`parse_model_spec`; also a model trained here on data without a
            training split (ImageNet's validation set, an evaluation-only image folder or
            tensor file). Messages name the key.
    """
    dataset = data.name if data is not None else config["dataset"]
    shard_dir = data.shard_dir if data is not None else f"resources/data/{dataset}/shards"
    trainable = data.trainable if data is not None else dataset != "imagenet"
    channels = in_channels if in_channels is not None else (data.info["in_channels"] if data is not None else 3)
    models = {m: parse_model_spec(m, c, num_classes=num_classes, in_channels=channels) for m, c in config["models"].items()}
    if not trainable:
        for m, p in models.items():
            if p.trained_here:
                what = ("dataset imagenet has no training split here; give a torchvision weights name (e.g. "
                        "IMAGENET1K_V1)") if dataset == "imagenet" else (
                        f"the dataset {dataset} has no training split (an evaluation-only folder or file): give "
                        "the model as a file (source: python, timm, torchscript or exported), or add train/ and "
                        "test/ folders")  # fmt: skip
                raise ConfigError(f"models.{m}.{'weights' if dataset == 'imagenet' else 'source'}: {what}")
    per_class = (config.get("datasets", {}).get("imagenet") or {}).get("images_per_class")
    suffix = f"-{per_class}-per-class" if per_class else ""
    if int((config.get("datasets", {}).get("imagenet") or {}).get("channels", 3)) == 1:
        suffix += "-1ch"
    if dataset == "imagenet":
        models = {m: p if p.transform is not None else replace(p, transform=_imagenet_transform(p.kind, p.load or {}))
                  for m, p in models.items()}  # fmt: skip
    variants = {transform_key(p.transform) + suffix: p.transform for p in models.values()} if dataset == "imagenet" else {}
    downloads = {Path(p.path).name: p.download for p in models.values() if p.download is not None}
    return SourcePlan(dataset, models, shard_dir, variants, downloads, suffix)
