"""Config helpers shared by every study: a strict YAML load (duplicate keys, file and line of
a syntax error, a top level that is not a mapping), ``--config`` overrides read as the file
would be, names that stay inside results/ and within the file system's name limit, schema
validation that fills in the defaults and names every bad key, level lists.

The whole check of a run's config, as the workflow makes it before any job (and
``netperturb check-config`` with it), is :func:`netperturb.runconfig.check_run_config`."""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "ConfigError", "NAME_PATTERN", "NAME_RESERVE", "check_config_files", "check_names", "config_errors",
    "expand_levels", "load_config_file", "load_config_files", "name_limit", "parse_overrides", "update_config",
    "validate_config",
]  # fmt: skip


class ConfigError(ValueError):
    """A config value that is well-typed but wrong; the message starts with the key."""


#: A name that becomes a folder or file name (``run``, the keys of ``models`` and
#: ``pravin2024.models``): letters, digits, ``_``, ``.``, ``-``, not starting with ``.`` or
#: ``-``, so ``.``, ``..`` and hidden names cannot lead out of ``results/<run>/``. The same
#: pattern is in config/schema.yaml.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"

_NAME_RULE = "letters, digits, '_', '.' and '-', starting with a letter, digit or '_'"

#: Bytes of a file or folder name that netperturb adds to a configured name at most (e.g.
#: ``.<model>.pt.sha256.XXXXXXXX.tmp``, the temporary file of a checkpoint's record): a name
#: may use the file system's name limit (``NAME_MAX``, 255 bytes on ext4 / xfs) minus these.
NAME_RESERVE = 32


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


def _require_mapping(data: Any, path: str | os.PathLike) -> dict:
    if isinstance(data, Mapping):
        return dict(data)
    what = "empty" if data is None else f"a {type(data).__name__} ({'YAML lines starting with -' if isinstance(data, list) else repr(data)[:40]})"
    raise ConfigError(
        f"{path}: the top level of a config file must be a mapping of keys (run:, studies:, models:, ...), "
        f"this one is {what}; see config/config.yaml for the layout"
    )


def check_config_files(paths: Iterable[str | os.PathLike]) -> None:
    """:func:`load_config_file` on every file (the workflow calls it on each config file the
    run reads, before any job; Snakemake's own load is kept, this only checks), each of
    which must be a mapping at its top level.

    Raises:
        ConfigError: see :func:`load_config_file`; a file whose top level is not a mapping
            (a YAML list, a scalar, an empty file), naming the file.
    """
    for path in dict.fromkeys(map(str, paths)):
        if os.path.exists(path):
            _require_mapping(load_config_file(path), path)


def update_config(config: dict, overrides: Mapping[str, Any]) -> dict:
    """Update ``config`` in place with ``overrides``, mapping into mapping (a nested key given in
    ``overrides`` replaces only that key), anything else replaced whole; Snakemake's
    ``update_config`` rule for config files given one after the other and for ``--config``.
    Returns ``config``."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            update_config(config[key], value)
        else:
            config[key] = value
    return config


def load_config_files(paths: Sequence[str | os.PathLike]) -> dict:
    """The config of ``paths`` as the workflow reads it: each file strictly
    (:func:`load_config_file`), a mapping at its top level, later files updating earlier ones
    (:func:`update_config`).

    Raises:
        ConfigError: a file is missing, not valid YAML, gives a key twice, or is not a mapping
            (names the file).
    """
    config: dict = {}
    for path in paths:
        if not os.path.exists(path):
            raise ConfigError(f"{path}: no such config file")
        update_config(config, _require_mapping(load_config_file(path), path))
    return config


def _all_strings(value: Any) -> bool:
    if isinstance(value, Mapping):
        return all(_all_strings(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_strings(v) for v in value)
    return isinstance(value, str)


def parse_overrides(entries: Sequence[str] | None, parsed: Mapping[str, Any] | None = None) -> dict:
    """``--config KEY=VALUE`` entries with each VALUE read as the same text in a config file is
    (YAML, strictly: ``cheney2017={"repeats": 3}`` gives the integer 3, ``gpu_env=true`` the
    boolean).

    Snakemake reads a ``--config`` value that is a mapping or a list with YAML's base loader,
    which makes every value in it a string (``{"repeats": 3}`` -> ``{"repeats": "3"}``), and
    ``true`` stays a string. With ``parsed`` (Snakemake's own result,
    ``workflow.config_settings.config``), only the entries Snakemake left as strings, or as
    mappings / lists of strings only, are read again; numbers, booleans and values given
    through Snakemake's API as Python objects are kept as they are.

    Returns:
        key -> value, for the entries to apply over Snakemake's (:func:`update_config`).

    Raises:
        ConfigError: an entry without ``=``, or a value that is not valid YAML (names the entry).
    """
    out: dict = {}
    for entry in entries or []:
        key, sep, text = str(entry).partition("=")
        if not sep:
            raise ConfigError(f"--config {entry!r}: give KEY=VALUE")
        if parsed is not None and (key not in parsed or not _all_strings(parsed[key])):
            continue
        if text == "":
            out[key] = None
            continue
        loader = _strict_loader()(text)
        loader.name = f"--config {key}"
        try:
            out[key] = loader.get_single_data()
        except Exception as e:  # yaml.YAMLError, or ConfigError (a key given twice)
            raise ConfigError(f"--config {entry!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
        finally:
            loader.dispose()
    return out


def name_limit(folder: str | os.PathLike = ".") -> int:
    """The longest configured name (bytes, UTF-8) that the file system holding ``folder``
    takes: its ``NAME_MAX`` (``os.pathconf``; 255 where it cannot be asked) minus
    :data:`NAME_RESERVE`."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    return int(limit if limit and limit > 0 else 255) - NAME_RESERVE


def check_names(config: Mapping[str, Any], folder: str | os.PathLike = ".") -> None:
    """Names that become folder or file names (``run``, ``models.<name>``,
    ``pravin2024.models.<name>``, ``faults.perturbations.<name>``) match :data:`NAME_PATTERN`
    (``..`` would put outputs outside ``results/``) and fit the file system that holds
    ``folder`` (the working folder of the run): at most :func:`netperturb.core.config.name_limit` bytes.

    Raises:
        ConfigError: names the key, the value (shortened when long) and the rule.
    """
    checks: list[tuple[str, Any]] = []
    if isinstance(config.get("run"), str):
        checks.append(("run", config["run"]))
    for section, label in ((config.get("models"), "models"),
                           ((config.get("pravin2024") or {}).get("models"), "pravin2024.models"),
                           ((config.get("faults") or {}).get("perturbations"), "faults.perturbations")):  # fmt: skip
        if isinstance(section, Mapping):
            checks += [(f"{label} key {k!r}" if len(str(k)) <= 40 else f"{label} key {str(k)[:20]!r}...", k) for k in section]
    limit = name_limit(folder)
    for key, value in checks:
        if not isinstance(value, str) or not re.match(NAME_PATTERN, value):
            raise ConfigError(
                f"{key}: {value!r} is not a usable name; it becomes a folder under results/, "
                f"so use {_NAME_RULE} (not '.', '..' or a path)"
            )
        size = len(value.encode("utf-8"))
        if size > limit:
            raise ConfigError(
                f"{key}: a name of {size} bytes ({value[:20]!r}...) is too long; it becomes a folder or file name, "
                f"and this file system takes {limit + NAME_RESERVE} bytes per name, of which netperturb needs "
                f"{NAME_RESERVE} for its own suffixes: use at most {limit} bytes"
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


def _default_filling_validator(schema: Mapping[str, Any]):
    """Draft 2020-12 validator that fills in each property's ``default`` where it is missing,
    as ``snakemake.utils.validate`` does (the recipe of the jsonschema FAQ)."""
    import jsonschema
    from jsonschema import validators

    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        for prop, sub in properties.items():
            if "default" in sub and isinstance(instance, dict):
                instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, subschema)

    return validators.extend(base, {"properties": set_defaults})(schema)


def validate_config(config: dict, schema_path: str | Path, files: Sequence[str] = ()) -> dict:
    """Check ``config`` against the JSON schema at ``schema_path`` and fill in every default
    the schema gives (in place, as ``snakemake.utils.validate`` does; the workflow calls this
    instead, so that ``netperturb check-config`` makes the same check).

    Returns:
        ``config``, with the defaults filled in.

    Raises:
        ConfigError: one line per violation, ``key: what is wrong`` (:func:`config_errors`),
            after a first line naming the config ``files`` and the schema.
    """
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    validator = _default_filling_validator(schema)
    if next(iter(validator.iter_errors(config)), None) is None:
        return config
    lines = config_errors(config, schema_path) or ["<top level>: does not match the schema"]
    raise ConfigError(
        f"{', '.join(files) or 'the config'} does not match config/schema.yaml:\n  " + "\n  ".join(lines)
    )


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
