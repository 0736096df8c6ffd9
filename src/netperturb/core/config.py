"""Config helpers shared by every study: schema errors that name the key, level lists."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["ConfigError", "config_errors", "expand_levels"]


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
