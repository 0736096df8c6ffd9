"""The layers of a configured model, selected by module path, label or glob; errors name the config key."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from netperturb.core.config import ConfigError
from netperturb.core.layers import (
    LayerInfo,
    LayerSelectionError,
    find_layers,
    select_layers,
)
from netperturb.models import build_meta

__all__ = ["model_layers", "configured_layers", "resolve_layers"]


def model_layers(arch: str, *, num_classes: int, in_channels: int) -> list[LayerInfo]:
    """Every Conv2d/Linear layer of ``arch``, from a meta-device build (no memory, no weights)."""
    return find_layers(build_meta(arch, num_classes=num_classes, in_channels=in_channels))


_LISTED: dict[str, list[LayerInfo]] = {}


def configured_layers(model_name: str, model_cfg: Mapping[str, Any], *, num_classes: int, in_channels: int) -> list[LayerInfo]:
    """Every perturbable layer of one configured model, from its source
    (:mod:`netperturb.models.sources`) without loading weights where possible: our models and
    torchvision's, timm and ``python`` factories are built on the meta device; a netperturb
    checkpoint given as ``file`` is built from the architecture it names; TorchScript and
    exported files are read (:func:`netperturb.models.external.external_layers`). Cached per
    process (the studies' plans share it).

    Raises:
        ConfigError: an unknown architecture, a factory or file that cannot be read (names the key).
    """
    import json

    from netperturb.models.sources import source_kind

    cache = json.dumps([model_name, dict(model_cfg), num_classes, in_channels], sort_keys=True, default=str)
    if cache in _LISTED:
        return _LISTED[cache]
    kind = source_kind(model_cfg)
    key = f"models.{model_name}"
    try:
        if kind in ("netperturb", "torchvision") and not model_cfg.get("file"):
            layers = model_layers(model_cfg.get("arch", model_name), num_classes=num_classes, in_channels=in_channels)
        elif kind == "netperturb":
            import torch

            ckpt = torch.load(model_cfg["file"], map_location="meta", weights_only=True)
            layers = model_layers(ckpt["arch"], num_classes=ckpt["num_classes"], in_channels=ckpt["in_channels"])
        else:
            from netperturb.models.external import external_layers

            spec = {"source": kind, "key": key, "num_classes": num_classes, "in_channels": in_channels,
                    **{k: model_cfg[k] for k in ("arch", "factory", "kwargs") if model_cfg.get(k) is not None}}  # fmt: skip
            layers = external_layers(spec, model_cfg.get("weights_file" if kind in ("timm", "python") else "file"))
    except ConfigError:
        raise
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        field = "arch" if kind in ("netperturb", "torchvision") and not model_cfg.get("file") else "source"
        msg = str(e)
        if msg.startswith("unknown model"):
            msg += (f". A model of your own: give {key}.source: python with factory and weights_file (a state_dict), "
                    "torchscript or exported with file, or timm with arch and weights_file")  # fmt: skip
        raise ConfigError(msg if msg.startswith(key) else f"{key}.{field}: {msg}") from None
    _LISTED[cache] = layers
    return layers


def resolve_layers(
    model_name: str,
    model_cfg: Mapping[str, Any],
    selection: str | Sequence[str],
    *,
    num_classes: int,
    in_channels: int,
    key: str,
) -> list[LayerInfo]:
    """The layers of one configured model that a selection names.

    Raises:
        ConfigError: the model cannot be listed (:func:`configured_layers`) or an entry matches
            no layer; the message names ``key`` and the model.
    """
    layers = configured_layers(model_name, model_cfg, num_classes=num_classes, in_channels=in_channels)
    try:
        return select_layers(layers, selection)
    except LayerSelectionError as e:
        raise ConfigError(f"{key} (model {model_name!r}): {e}") from None
