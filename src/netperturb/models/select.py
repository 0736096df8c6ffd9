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

__all__ = ["model_layers", "resolve_layers"]


def model_layers(arch: str, *, num_classes: int, in_channels: int) -> list[LayerInfo]:
    """Every Conv2d/Linear layer of ``arch``, from a meta-device build (no memory, no weights)."""
    return find_layers(build_meta(arch, num_classes=num_classes, in_channels=in_channels))


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
        ConfigError: the architecture is unknown or an entry matches no layer; the message
            names ``key`` and the model.
    """
    arch = model_cfg.get("arch", model_name)
    try:
        layers = model_layers(arch, num_classes=num_classes, in_channels=in_channels)
    except ValueError as e:
        raise ConfigError(f"models.{model_name}.arch: {e}") from None
    try:
        return select_layers(layers, selection)
    except LayerSelectionError as e:
        raise ConfigError(f"{key} (model {model_name!r}): {e}") from None
