"""Pretrained torchvision weights: look-up, checked download, and loading as a LoadedModel.

A configured model is either trained here (a netperturb checkpoint, :mod:`netperturb.models.checkpoints`)
or a torchvision classifier with one of its published weights (``models.<name>.weights:
IMAGENET1K_V1``). For the latter everything comes from torchvision's weights enum
(``torchvision.models.get_model_weights(arch)[name]``): the official URL, the file name whose
``-<hex>.`` part is the first hex digits of the file's sha256 (torch.hub's convention), the
preprocessing (``weights.transforms()``: resize, centre crop, interpolation, mean, std) and
the published accuracy (``weights.meta["_metrics"]``).

The download (:func:`fetch_weights`) runs on a machine with internet (the workflow's
``download_weights`` is a local rule); the jobs that use the file only read it
(:func:`load_pretrained`), so compute nodes need no internet.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

import torch

from netperturb.core.config import ConfigError
from netperturb.core.integrity import record_digest
from netperturb.core.io import sha256_file
from netperturb.core.preprocess import Preprocess

__all__ = [
    "HASH_REGEX",
    "get_weights",
    "transform_spec",
    "transform_key",
    "resolve_model_source",
    "fetch_weights",
    "load_pretrained",
    "published_accuracy",
    "weights_preprocess",
    "WeightsError",
]

log = logging.getLogger("netperturb")

#: torch.hub's rule for the sha256 prefix in a weights file name (``alexnet-owt-7be5be79.pth``).
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")


class WeightsError(RuntimeError):
    """A weights file could not be fetched, or does not match its sha256 prefix."""


def get_weights(arch: str, name: str):
    """torchvision's weights enum member ``name`` (e.g. ``"IMAGENET1K_V1"``, ``"DEFAULT"``) of
    the classifier ``arch``.

    Raises:
        ValueError: ``arch`` has no weights in torchvision or ``name`` is not one of them
            (the message lists the ones there are).
    """
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        raise ValueError(f"{arch!r} is not a torchvision model with pretrained weights") from None
    try:
        return enum[name]
    except KeyError:
        raise ValueError(f"{arch!r} has no weights {name!r}; torchvision has {', '.join(enum.__members__)}") from None


def transform_spec(weights) -> dict[str, Any]:
    """The image-geometry part of ``weights.transforms()`` (torchvision's
    ``ImageClassification``): ``{"resize_size": [int], "crop_size": [int], "interpolation":
    "bilinear", "antialias": bool}``. These are applied once when the images are decoded;
    the scaling and mean/std normalisation are applied on the device (:func:`weights_preprocess`).

    Raises:
        ValueError: the weights' transforms are not a resize + centre crop classification
            transform.
    """
    t = weights.transforms()
    missing = [a for a in ("resize_size", "crop_size", "interpolation", "mean", "std") if not hasattr(t, a)]
    if missing or t.crop_size is None:
        raise ValueError(f"{weights}: transforms() is not an image-classification resize + crop ({type(t).__name__})")
    return {
        "resize_size": [int(v) for v in t.resize_size] if t.resize_size is not None else None,
        "crop_size": [int(v) for v in t.crop_size],
        "interpolation": t.interpolation.value,
        "antialias": bool(getattr(t, "antialias", True)),
    }


def transform_key(spec: Mapping[str, Any]) -> str:
    """A folder name for a :func:`transform_spec`, e.g. ``resize256-crop224-bilinear``; models
    whose weights share it share the decoded shards."""
    size = lambda v: "none" if v is None else "x".join(str(int(s)) for s in v)  # noqa: E731
    key = f"resize{size(spec['resize_size'])}-crop{size(spec['crop_size'])}-{spec['interpolation']}"
    return key if spec.get("antialias", True) else key + "-noaa"


def weights_preprocess(weights) -> Preprocess:
    """Scale uint8 by 1/255 and normalise with the weights' mean/std (torchvision's
    ``convert_image_dtype`` + ``normalize``); no resize (done when the shards were made)."""
    t = weights.transforms()
    return Preprocess(scale=1 / 255, mean=tuple(float(m) for m in t.mean), std=tuple(float(s) for s in t.std), size=None)


def _file_hash(name: str) -> str | None:
    m = HASH_REGEX.search(name)
    return m.group(1) if m and m.group(1) else None


def resolve_model_source(
    model_name: str, model_cfg: Mapping[str, Any], *, num_classes: int, weights_dir: str = "resources/weights"
) -> dict[str, Any] | None:
    """Where a configured model's weights come from, decided when the workflow is planned.

    Returns None for a model trained here (no ``weights`` key), else a dict with ``arch``,
    ``weights`` (enum name), ``url`` (official, or ``weights_url``), ``path`` (the file the
    jobs read: ``weights_file`` as given, else ``<weights_dir>/<file name>``), ``download``
    (whether the workflow fetches it), ``sha256_prefix`` (from the file name of ``weights_url``
    / ``weights_file`` if it carries one, else from the official file name -- a mirror is
    expected to serve the official file), ``transform`` (:func:`transform_spec`) and
    ``transform_key``.

    Raises:
        ConfigError: unknown weights, a class count that does not fit the dataset, or keys
            that do not go with pretrained weights (message names the key).
    """
    name = model_cfg.get("weights")
    key = f"models.{model_name}"
    if name is None:
        for k in ("weights_url", "weights_file"):
            if k in model_cfg:
                raise ConfigError(f"{key}.{k}: only used with {key}.weights (a torchvision weights name)")
        return None
    arch = model_cfg.get("arch", model_name)
    try:
        weights = get_weights(arch, name)
        spec = transform_spec(weights)
    except ValueError as e:
        raise ConfigError(f"{key}.weights: {e}") from None
    for k in ("train", "input_size"):
        if k in model_cfg:
            raise ConfigError(f"{key}.{k}: not used with pretrained weights ({key}.weights: {name})")
    n = len(weights.meta.get("categories") or [])
    if n != num_classes:
        raise ConfigError(f"{key}.weights: {arch} {name} has {n} classes, the dataset has {num_classes}")
    official = os.path.basename(urlparse(weights.url).path)
    url = model_cfg.get("weights_url") or weights.url
    local = model_cfg.get("weights_file")
    if local and model_cfg.get("weights_url"):
        raise ConfigError(f"{key}: give weights_url or weights_file, not both")
    own = os.path.basename(local) if local else os.path.basename(urlparse(url).path)
    prefix = _file_hash(own) or _file_hash(official)
    if prefix is None:
        raise ConfigError(f"{key}.weights: no sha256 prefix in {own!r} or {official!r}")
    file_name = own if _file_hash(own) else official
    return {
        "arch": arch,
        "weights": weights.name,
        "url": url,
        "path": str(local) if local else f"{weights_dir}/{file_name}",
        "download": not local,
        "sha256_prefix": prefix,
        "transform": spec,
        "transform_key": transform_key(spec),
    }


def fetch_weights(
    url: str,
    dst: str | os.PathLike,
    sha256_prefix: str,
    *,
    attempts: int = 3,
    wait_s: float = 10.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` (``https://``, ``http://`` or ``file://``) to ``dst`` and check that the
    file's sha256 starts with ``sha256_prefix``.

    Uses ``torch.hub.download_url_to_file`` (a temporary ``.partial`` file next to ``dst``,
    renamed into place only after the hash matched; removed on any failure). A failed
    attempt is retried ``attempts - 1`` times, ``wait_s * attempt`` seconds apart; a
    ``file://`` URL is tried once (a local file has no transient failures).

    Raises:
        WeightsError: every attempt failed; the message names the URL, ``dst`` and the last
            cause (for a wrong hash: the expected prefix and the digest found). ``dst`` does
            not exist afterwards.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if urlparse(url).scheme == "file":
        attempts = 1
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            log.info("downloading %s -> %s (attempt %d/%d)", url, dst, attempt, attempts)
            torch.hub.download_url_to_file(url, str(dst), hash_prefix=sha256_prefix, progress=progress)
            record_digest(dst)  # <dst>.sha256: later damage is found before the file is used
            return dst
        except Exception as e:  # network errors, HTTP errors, hash mismatch
            last = e
            dst.unlink(missing_ok=True)
            log.warning("attempt %d/%d failed: %s", attempt, attempts, e)
            if attempt < attempts:
                time.sleep(wait_s * attempt)
    raise WeightsError(
        f"could not fetch {url} -> {dst} (sha256 must start with {sha256_prefix}) after {attempts} attempt(s): {last}"
    )


def load_pretrained(
    path: str | os.PathLike,
    arch: str,
    weights: str,
    device: torch.device | str = "cpu",
    *,
    sha256_prefix: str | None = None,
):
    """A torchvision classifier with its pretrained weights read from the local file ``path``.

    The model is built by torchvision's own builder for those weights
    (``torchvision.models.get_model(arch, weights=...)``), so builder details such as
    Inception v3's ``transform_input`` and auxiliary head are exactly torchvision's; the
    builder finds the file through a private torch.hub cache folder holding a link to
    ``path`` under the official file name, so nothing is downloaded.

    Returns:
        :class:`~netperturb.models.loaded.LoadedModel` in eval mode on ``device``, with
        ``preprocess`` = :func:`weights_preprocess`, ``weights`` = ``"<name>@<sha256[:12]>"``
        and ``meta`` holding the URL, full sha256, the transform and the published metrics.

    Raises:
        FileNotFoundError: no file at ``path``.
        WeightsError: the file's sha256 does not start with ``sha256_prefix`` (names the file).
        ValueError: unknown arch / weights name.
    """
    import torchvision

    from netperturb.models.loaded import LoadedModel

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    w = get_weights(arch, weights)
    digest = sha256_file(path)
    if sha256_prefix and not digest.startswith(sha256_prefix):
        from netperturb.core.integrity import sidecar_path

        if sidecar_path(path).exists():  # fetched by the workflow (download_weights records it)
            remedy = (f"delete it and fetch it again (rm {path} {path}.sha256, then run the same snakemake "
                      "command: download_weights fetches it again)")  # fmt: skip
        else:  # the user's file (models.<name>.weights_file, --checkpoint)
            remedy = (f"replace it with a good copy of {arch} {weights} (models.<name>.weights_file), or give "
                      "its own model source if it is other weights (e.g. source: python with its factory)")  # fmt: skip
        raise WeightsError(
            f"weights file {path}: sha256 {digest} does not start with {sha256_prefix}: the file is "
            f"damaged or not these weights; {remedy}"
        )
    official = os.path.basename(urlparse(w.url).path)
    previous = torch.hub.get_dir()
    with tempfile.TemporaryDirectory(prefix="netperturb-hub-") as hub:
        (Path(hub) / "checkpoints").mkdir()
        os.symlink(path.resolve(), Path(hub) / "checkpoints" / official)
        torch.hub.set_dir(hub)
        try:
            model = torchvision.models.get_model(arch, weights=w)
        except RuntimeError as e:
            raise ValueError(f"weights file {path}: does not fit {arch} {weights}: {e}") from None
        finally:
            torch.hub.set_dir(previous)
    model.to(device).eval().requires_grad_(False)
    from netperturb.models.expects import InputSpec

    t = w.transforms()
    crop = [int(v) for v in t.crop_size] * (2 if len(t.crop_size) == 1 else 1)
    inputs = InputSpec(
        value_max=255.0, mean=tuple(float(m) for m in t.mean), std=tuple(float(v) for v in t.std), size=(crop[0], crop[1]),
        resize=False, channels=3, described=f"the torchvision weights {arch} {w.name} ({path})",
        crop_pct=crop[0] / int(t.resize_size[0]) if t.resize_size else None,
    )  # fmt: skip
    return LoadedModel(
        model=model,
        inputs=inputs,
        preprocess=weights_preprocess(w),
        arch=arch,
        weights=f"{w.name}@{digest[:12]}",
        meta={
            "source": "torchvision",
            "weights": f"{type(w).__name__}.{w.name}",
            "url": w.url,
            "file": str(path),
            "sha256": digest,
            "transform": transform_spec(w),
            "published": dict(w.meta.get("_metrics", {})),
        },
    )


def published_accuracy(arch: str, weights_id: str) -> dict[str, float] | None:
    """torchvision's published ImageNet-1K accuracy of the weights a result row names, as
    fractions: ``{"top1", "top5"}`` from ``weights.meta["_metrics"]["ImageNet-1K"]`` (acc@1,
    acc@5 in percent there), or None when ``weights_id`` (the ``weights`` column,
    ``"<name>@<sha256 prefix>"``) is not torchvision's or has no such numbers."""
    if "@" not in str(weights_id):
        return None
    try:
        w = get_weights(arch, str(weights_id).split("@", 1)[0])
    except ValueError:
        return None
    m = w.meta.get("_metrics", {}).get("ImageNet-1K")
    if not m or "acc@1" not in m:
        return None
    return {"top1": m["acc@1"] / 100, "top5": m["acc@5"] / 100}
