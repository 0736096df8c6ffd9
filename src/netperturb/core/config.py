"""Config helpers shared by every study: a strict YAML load (duplicate keys, file and line of
a syntax error), names that stay inside results/, schema errors that name the key, level
lists."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "ConfigError", "NAME_PATTERN", "check_config_files", "check_names", "config_errors",
    "expand_levels", "load_config_file",
]  # fmt: skip


class ConfigError(ValueError):
    """A config value that is well-typed but wrong; the message starts with the key."""


#: A name that becomes a folder or file name (``run``, the keys of ``models`` and
#: ``pravin2024.models``): letters, digits, ``_``, ``.``, ``-``, not starting with ``.`` or
#: ``-``, so ``.``, ``..`` and hidden names cannot lead out of ``results/<run>/``. The same
#: pattern is in config/schema.yaml.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"

_NAME_RULE = "letters, digits, '_', '.' and '-', starting with a letter, digit or '_'"


def _strict_loader():
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(loader, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:  # the keys as written (before `<<` merges add theirs)
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: let PyYAML say so
                continue
            if first is not None:
                raise ConfigError(
                    f"{loader.name}: line {line}: key {key!r} is given twice (first at line {first}); "
                    "YAML keeps only the last, so the first block would be ignored silently: "
                    "merge the two or delete one"
                )
            seen[key] = line
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def load_config_file(path: str | os.PathLike) -> Any:
    """Load a YAML (or JSON) config file, refusing what a plain load accepts silently.

    Raises:
        ConfigError: a key given twice in one mapping (names the file, the key and both
            lines), or a YAML syntax error (names the file, line and column).
    """
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    loader = _strict_loader()(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark, start = e.problem_mark or e.context_mark, e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        if start is not None and mark is not None and start.line != mark.line:
            what += f" (the construct starts at line {start.line + 1}, column {start.column + 1})"
        raise ConfigError(f"{path}: {where}: not valid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    finally:
        loader.dispose()


def check_config_files(paths: Iterable[str | os.PathLike]) -> None:
    """:func:`load_config_file` on every file (the workflow calls it on each config file the
    run reads, before any job; Snakemake's own load is kept, this only checks).

    Raises:
        ConfigError: see :func:`load_config_file`.
    """
    for path in dict.fromkeys(map(str, paths)):
        if os.path.exists(path):
            load_config_file(path)


def check_names(config: Mapping[str, Any]) -> None:
    """Names that become folder names (``run``, ``models.<name>``, ``pravin2024.models.<name>``)
    match :data:`NAME_PATTERN`; ``..`` would put outputs outside ``results/``.

    Raises:
        ConfigError: names the key and the value.
    """
    checks: list[tuple[str, Any]] = []
    if isinstance(config.get("run"), str):
        checks.append(("run", config["run"]))
    for section, label in ((config.get("models"), "models"),
                           ((config.get("pravin2024") or {}).get("models"), "pravin2024.models")):  # fmt: skip
        if isinstance(section, Mapping):
            checks += [(f"{label} key {k!r}", k) for k in section]
    for key, value in checks:
        if not isinstance(value, str) or not re.match(NAME_PATTERN, value):
            raise ConfigError(
                f"{key}: {value!r} is not a usable name; it becomes a folder under results/, "
                f"so use {_NAME_RULE} (not '.', '..' or a path)"
            )


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
            candidates = [e for e in err.context if len(e.absolute_path) == deepest]
            # a branch of the value's own type (a list of levels, not a grid) says more than
            # "is not of type 'object'"
            candidates = [e for e in candidates if e.validator != "type"] or candidates
            err = best_match(candidates)
        message = err.message
        if err.validator == "minItems" and err.instance == []:
            message = f"an empty list; give at least {err.validator_value} item(s)"
        lines.append(f"{_key(err.absolute_path)}: {message}")
    return lines


def expand_levels(spec: Sequence[float] | Mapping[str, float], key: str = "levels") -> list[float]:
    """A list of levels, or ``{start, stop, step}`` -> the inclusive grid start, start+step, ..
    stop, each rounded to 10 decimals (so 0.1 * 3 is 0.3).

    Raises:
        ConfigError: empty list, a level or grid bound that is not a finite number (``.inf``,
            ``.nan``), step <= 0, stop < start, duplicates; the message starts with ``key``.
    """
    values = list(spec.values()) if isinstance(spec, Mapping) else list(spec)
    bad = [v for v in values if not _finite(v)]
    if bad:
        raise ConfigError(f"{key}: levels must be finite numbers, got {bad[0]!r} (YAML .inf / .nan are not levels)")
    if isinstance(spec, Mapping):
        start, stop, step = (float(spec[k]) for k in ("start", "stop", "step"))
        if step <= 0 or stop < start:
            raise ConfigError(f"{key}: need step > 0 and stop >= start, got {dict(spec)}")
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        levels = [round(start + i * step, 10) for i in range(n)]
    else:
        levels = [round(float(v), 10) for v in spec]
    if not levels:
        raise ConfigError(f"{key}: no levels; give a list of at least one level, or {{start, stop, step}}")
    if len(set(levels)) != len(levels):
        raise ConfigError(f"{key}: duplicate levels in {levels}")
    return levels


def _finite(v: Any) -> bool:
    try:
        return not isinstance(v, bool) and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
