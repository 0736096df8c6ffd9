"""The configuration reference, generated from ``config/schema.yaml`` (one source for every key).

:func:`schema_keys` walks the JSON schema the workflow validates a config against and yields
one :class:`ConfigKey` per key (dotted path, type, default, unit, meaning); :func:`render`
writes them as MyST Markdown tables, one section per top-level group. As a Sphinx extension
(``extensions = ["config_reference"]``) it writes ``reference/_generated/config_keys.md``
when the build starts; ``reference/configuration.md`` includes that file.

Conventions read from the schema:

- ``description``: the meaning (a key without one is an error of the schema:
  :func:`undocumented` lists them, and the tests fail on any);
- ``default``: the value filled in when the key is absent; ``required`` keys say so;
- ``unit`` (an annotation keyword that JSON-schema validators ignore): the unit of a number;
- ``$ref`` into ``#/definitions/`` is expanded (its keys are listed under the referring key);
  a ``$ref`` to another key (``#/properties/...``) is not (the meaning says "as ...");
- ``patternProperties`` (names the user chooses) appear as ``<name>``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

#: Placeholder for a key the user names (``models.<name>``, ``faults.perturbations.<name>``).
NAME = "<name>"
_MISSING = object()


@dataclass(frozen=True)
class ConfigKey:
    """One key of the configuration.

    Attributes:
        path: dotted path, e.g. ``cheney2017.perturbations.synapse_knockout.levels``.
        kind: the type in words, Markdown (``integer >= 1``, ``one of `fast`, `naive```).
        default: the default as Markdown, ``required`` or ``—`` (none).
        unit: the schema's ``unit`` annotation, or ``—``.
        description: the meaning (the schema's ``description``; "" when it has none).
        ref: dotted path of the key whose definition this one shares (``$ref`` to a key).
    """

    path: str
    kind: str
    default: str
    unit: str
    description: str
    ref: str | None = None
    group: str = field(default="", compare=False)


def load_schema(path: str | Path) -> dict[str, Any]:
    """The schema file as a dict."""
    return yaml.safe_load(Path(path).read_text())


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``node`` with its ``$ref`` merged in (the node's own keywords win), and the ref."""
    ref = node.get("$ref")
    if not ref:
        return node, None
    if not ref.startswith("#/"):
        raise ValueError(f"$ref {ref!r}: only references inside the schema are supported")
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    target, _ = _resolve(target, root)
    merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return merged, ref


def _ref_path(ref: str) -> str:
    """``#/properties/cheney2017/properties/perturbations`` -> ``cheney2017.perturbations``."""
    parts = ref[2:].split("/")
    return ".".join(p for p in parts if p not in ("properties",))


def _code(text: str) -> str:
    """An inline code span."""
    ticks = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _value(value: Any) -> str:
    """A value as compact YAML flow text (``null``, ``true``, ``[0, 1]``, ``{a: 1}``)."""
    if isinstance(value, str):
        return value if value and re.fullmatch(r"[A-Za-z0-9_.*/<>-]+", value) else json.dumps(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if abs(value) >= 1e-4 or value == 0 else f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return str(value)


_ESCAPE = re.compile(r"([\\*_\[\]<>|${}#~&!])")


def markdown_text(text: str) -> str:
    """Schema prose as Markdown: backtick spans stay code, everything else is literal text
    (Markdown's special characters escaped, so ``fc*`` or ``<run>`` print as written)."""
    text = " ".join(text.split())
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(_code(part[1:-1]))
        else:
            out.append(_ESCAPE.sub(r"\\\1", part))
    return "".join(out)


def _bounds(node: dict[str, Any]) -> str:
    lo, hi = node.get("minimum"), node.get("maximum")
    xlo, xhi = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    low = (lo, "[") if lo is not None else (xlo, "(") if xlo is not None else None
    high = (hi, "]") if hi is not None else (xhi, ")") if xhi is not None else None
    if low and high:
        return f" in {low[1]}{_value(low[0])}, {_value(high[0])}{high[1]}"
    if low:
        return f" {'≥' if low[1] == '[' else '>'} {_value(low[0])}"
    if high:
        return f" {'≤' if high[1] == ']' else '<'} {_value(high[0])}"
    return ""


_TYPE_WORDS = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean",
               "array": "list", "object": "mapping", "null": "null"}  # fmt: skip


def type_text(node: dict[str, Any], root: dict[str, Any]) -> str:
    """The type of a schema node in words (Markdown)."""
    node, _ = _resolve(node, root)
    for combo, word in (("oneOf", " or "), ("anyOf", " or ")):
        if combo in node:
            return word.join(type_text(alt, root) for alt in node[combo])
    if "enum" in node:
        values = [v for v in node["enum"]]
        if len(values) == 1:
            return _code(_value(values[0]))
        return "one of " + ", ".join(_code(_value(v)) for v in values)
    types = node.get("type")
    if isinstance(types, list):
        main = [t for t in types if t != "null"]
        text = " or ".join(type_text({**node, "type": t}, root) for t in main)
        return text + (" or `null`" if "null" in types else "")
    if types in ("integer", "number"):
        return _TYPE_WORDS[types] + _bounds(node)
    if types == "array":
        items = node.get("items")
        inner = type_text(items, root) if items else "values"
        n = ""
        if node.get("minItems") and node.get("minItems") == node.get("maxItems"):
            n = f" {node['minItems']}"
        return f"list of{n} {inner}" if not inner.startswith("one of") else f"list, each {inner}"
    if types == "object" or (types is None and ("properties" in node or "patternProperties" in node)):
        props = node.get("properties") or {}
        if props and set(node.get("required", [])) == set(props) and not node.get("patternProperties"):
            return "mapping {" + ", ".join(props) + "}"
        return "mapping"
    if types == "string":
        if "pattern" in node:
            return "string matching " + _code(node["pattern"])
        return "string"
    if types in _TYPE_WORDS:
        return _TYPE_WORDS[types]
    return "any"


def _default_text(node: dict[str, Any], required: bool) -> str:
    if "default" in node:
        return _code(_value(node["default"]))
    return "required" if required else "—"


def _is_object(node: dict[str, Any]) -> bool:
    return node.get("type") == "object" or "properties" in node or "patternProperties" in node


def _walk(node: dict[str, Any], path: str, root: dict[str, Any], required: bool, group: str) -> Iterator[ConfigKey]:
    resolved, ref = _resolve(node, root)
    shared = ref if ref and not ref.startswith("#/definitions/") else None
    description = str(resolved.get("description", "")).strip()
    yield ConfigKey(
        path=path,
        kind=type_text(resolved, root),
        default=_default_text(resolved, required),
        unit=str(resolved["unit"]) if "unit" in resolved else "—",
        description=description,
        ref=_ref_path(shared) if shared else None,
        group=group,
    )
    if shared or not _is_object(resolved):
        return
    yield from _children(resolved, path, root, group)


def _children(node: dict[str, Any], path: str, root: dict[str, Any], group: str) -> Iterator[ConfigKey]:
    required = set(node.get("required", []))
    for name, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}" if path else name, root, name in required, group or name)
    for child in (node.get("patternProperties") or {}).values():
        inner, _ = _resolve(child, root)
        sub = f"{path}.{NAME}" if path else NAME
        if inner.get("description"):  # the named entry itself is documented: list it
            yield ConfigKey(sub, type_text(inner, root), "—", "—", str(inner["description"]).strip(), group=group)
        yield from _children(inner, sub, root, group)


def schema_keys(schema: dict[str, Any]) -> list[ConfigKey]:
    """Every key of the schema, depth first in the schema's order."""
    return list(_children(schema, "", schema, ""))


def undocumented(schema: dict[str, Any]) -> list[str]:
    """Paths of the keys without a description (should be none)."""
    return [k.path for k in schema_keys(schema) if not k.description]


def _anchor(path: str) -> str:
    return "config-" + re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def render(schema: dict[str, Any], source: str = "config/schema.yaml") -> str:
    """The reference as MyST Markdown: the top-level keys, then one section (with a
    ``config-<group>`` label) per group (``datasets``, ``models``, each study); every key is a
    definition-list entry with the anchor ``config-<dotted-path>`` (``<`` ``>`` and dots as
    ``-``): its type, default and unit, then its meaning."""
    keys = schema_keys(schema)
    groups: dict[str, list[ConfigKey]] = {}
    top = schema.get("properties", {})
    for key in keys:
        root_key = key.path.split(".")[0]
        nested = _is_object(_resolve(top.get(root_key, {}), schema)[0])
        groups.setdefault(root_key if nested else "", []).append(key)
    lines = [
        f"<!-- generated from {source} by docs/_ext/config_reference.py: do not edit -->",
        "",
    ]

    def entries(rows: list[ConfigKey]) -> None:
        # a definition list, one entry per key: the key (with an anchor), then "type ·
        # default · unit", then the meaning (a table of five columns does not fit the page)
        for k in rows:
            meaning = markdown_text(k.description)
            if k.ref:
                meaning += f" (the keys of {_code(k.ref)})"
            lines.append(f"{_code(k.path)}{{#{_anchor(k.path)}}}")
            lines.append(f": {k.kind} · default: {k.default} · unit: {markdown_text(k.unit)}")
            lines.append("")
            lines.append(f"  {meaning}")
            lines.append("")

    if "" in groups:
        lines += ["(config-top-level)=", "## Top-level keys", "",
                  "Shared by every study.", ""]  # fmt: skip
        entries(groups.pop(""))
    for name, rows in groups.items():
        head, rest = rows[0], rows[1:]
        lines += [f"({_anchor(name)})=", f"## `{name}`", "", markdown_text(head.description), ""]
        lines.append(f"Type: {head.kind}; default: {head.default}.")
        lines.append("")
        entries(rest)
    return "\n".join(lines)


def write_reference(schema_path: str | Path, out: str | Path) -> bool:
    """Write :func:`render` of ``schema_path`` to ``out`` if it changed; True if written.

    Raises:
        ValueError: a key of the schema has no description (names the keys).
    """
    schema = load_schema(schema_path)
    missing = undocumented(schema)
    if missing:
        raise ValueError(f"{schema_path}: keys without a description: {', '.join(missing)}; "
                         "add a `description:` to each")  # fmt: skip
    text = render(schema)
    out = Path(out)
    if out.exists() and out.read_text() == text:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return True


def _generate(app, config) -> None:  # config-inited: before Sphinx looks for source files
    srcdir = Path(app.srcdir)
    write_reference(srcdir.parent / "config" / "schema.yaml", srcdir / "reference" / "_generated" / "config_keys.md")


def setup(app):
    app.connect("config-inited", _generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
