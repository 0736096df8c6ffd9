"""Interpretation of the workflow config that the schema cannot express.

``config/schema.yaml`` checks types, ranges and names; this module expands level grids and
resolves layer selections against the real module structure of each model, with errors
that name the config key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .layers import LayerInfo, LayerSelectionError, find_layers, select_layers
from .models import build_meta

__all__ = ["ConfigError", "config_errors", "expand_levels", "resolve_layers", "model_layers"]


class ConfigError(ValueError):
    """A config value that is well-typed but wrong; the message starts with the key."""


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def config_errors(config: Mapping[str, Any], schema_path: str | Path) -> list[str]:
    """Every schema violation of ``config`` as one line ``key: what is wrong``.

    Snakemake's ``validate`` (which also fills in defaults) reports only the first error
    together with the whole schema; this gives the reader the keys. For ``oneOf`` choices
    (a level list *or* a {start, stop, step} grid) the most specific reason is given.
    """
    import jsonschema
    import yaml
    from jsonschema.exceptions import best_match

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    lines = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        if err.context:
            deepest = max(len(e.absolute_path) for e in err.context)
            err = best_match([e for e in err.context if len(e.absolute_path) == deepest])
        lines.append(f"{_key(err.absolute_path)}: {err.message}")
    return lines


def expand_levels(spec: Sequence[float] | Mapping[str, float], key: str = "levels") -> list[float]:
    """A list of levels, or ``{start, stop, step}`` -> the inclusive grid start, start+step, ..
    stop, each rounded to 10 decimals (so 0.1 * 3 is 0.3).

    Raises:
        ConfigError: empty list, step <= 0, stop < start, duplicates.
    """
    if isinstance(spec, Mapping):
        start, stop, step = (float(spec[k]) for k in ("start", "stop", "step"))
        if step <= 0 or stop < start:
            raise ConfigError(f"{key}: need step > 0 and stop >= start, got {dict(spec)}")
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        levels = [round(start + i * step, 10) for i in range(n)]
    else:
        levels = [round(float(v), 10) for v in spec]
    if not levels:
        raise ConfigError(f"{key}: no levels")
    if len(set(levels)) != len(levels):
        raise ConfigError(f"{key}: duplicate levels in {levels}")
    return levels


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
