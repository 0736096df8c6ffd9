"""The configuration reference of the docs is generated from config/schema.yaml
(docs/_ext/config_reference.py): every key has a description, and the generated page lists
every key with its type, default, unit and meaning."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "docs" / "_ext"))

import config_reference as cr  # noqa: E402

SCHEMA = REPO / "config" / "schema.yaml"


@pytest.fixture(scope="module")
def schema() -> dict:
    return cr.load_schema(SCHEMA)


def test_every_schema_key_has_a_description(schema):
    missing = cr.undocumented(schema)
    assert not missing, f"config/schema.yaml: keys without a description: {missing}"


def test_a_key_without_description_is_found_and_stops_the_generator(schema, tmp_path):
    bad = copy.deepcopy(schema)
    del bad["properties"]["cheney2017"]["properties"]["repeats"]["description"]
    bad["properties"]["faults"]["properties"]["perturbations"]["patternProperties"][
        "^[A-Za-z0-9_][A-Za-z0-9_.-]*$"]["properties"]["value"].pop("description")  # fmt: skip
    assert cr.undocumented(bad) == ["cheney2017.repeats", "faults.perturbations.<name>.value"]
    path = tmp_path / "schema.yaml"
    import yaml

    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"cheney2017\.repeats, faults\.perturbations\.<name>\.value"):
        cr.write_reference(path, tmp_path / "out.md")
    assert not (tmp_path / "out.md").exists()


def _rows(text: str) -> dict[str, list[str]]:
    """key -> [type, default, unit, meaning] of its definition-list entry."""
    rows = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^`([^`]+)`\{#config-[a-z0-9-]+\}$", line)
        if m:
            head = re.match(r"^: (.*) · default: (.*) · unit: (.*)$", lines[i + 1])
            assert head and lines[i + 2] == "" and lines[i + 3].startswith("  "), lines[i:i + 4]
            rows[m.group(1)] = [*head.groups(), lines[i + 3].strip()]
    return rows


def test_reference_lists_every_key_once_with_type_default_unit_and_meaning(schema):
    text = cr.render(schema)
    rows = _rows(text)
    keys = cr.schema_keys(schema)
    # a top-level key with keys under it is a section, headed by its own description
    groups = {k.path for k in keys if "." not in k.path and any(j.path.startswith(k.path + ".") for j in keys)}
    expected = {k.path for k in keys} - groups  # a group's own description heads its section
    assert set(rows) == expected
    assert len(expected) > 150  # the whole schema, not a part of it
    for path, cells in rows.items():
        assert len(cells) == 4, (path, cells)
        assert all(c.strip() for c in cells), (path, cells)
    assert rows["cheney2017.repeats"][:3] == ["integer ≥ 1", "`5`", "draws per level"]
    assert rows["datasets.imagenet.mem_mb"][:3] == ["integer ≥ 1", "`16000`", "MB"]
    assert rows["pravin2024.models.<name>.arch"][1] == "required"
    assert "## `dataset`" in text and "Type: string or mapping; default: `digits`." in text  # a name, or your own data
    assert rows["cheney2017.engine"][0] == "one of `fast`, `functional`, `naive`"
    assert rows["pravin2024.retraining.checkpoint"][0] == "integer ≥ 1 or `null`"
    assert rows["shen2021.perturbation.perturbations"][3].endswith("(the keys of `cheney2017.perturbations`)")
    for group in groups:
        assert f"(config-{group})=" in text and f"## `{group}`" in text


def test_every_number_has_a_unit_or_is_a_count_seed_or_rate(schema):
    """A number without a unit is a seed, a learning rate, a weight or a factor of its own
    kind; everything else says its unit (MB, minutes, images, pixels, ...)."""
    unitless = {k.path for k in cr.schema_keys(schema)
                if k.kind.startswith(("integer", "number")) and k.unit == "—"}  # fmt: skip
    allowed = re.compile(r"(^|\.)(seed|split_seed|lr|weight_decay|momentum)$")
    assert {p for p in unitless if not allowed.search(p)} == set()


def test_prose_is_escaped_and_code_stays_code():
    assert cr.markdown_text("results/<run>/ and fc* | `a|b` and `x`") == (
        "results/\\<run\\>/ and fc\\* \\| `a|b` and `x`"
    )
    assert cr.type_text({"type": "integer", "minimum": 1, "maximum": 8}, {}) == "integer in [1, 8]"
    assert cr.type_text({"type": ["number", "null"], "exclusiveMinimum": 0}, {}) == "number > 0 or `null`"
