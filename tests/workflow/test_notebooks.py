"""The papermill report templates in notebooks/: each .ipynb is paired with a jupytext
percent-format twin (.py) holding the same cells, has one `parameters` cell that takes the
run name as `run`, imports only names that exist in netperturb, and is committed without
outputs. The templates are edited directly (or through their .py twin); the generator
script that used to write them is gone."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.config import load_jupytext_config
from jupytext.formats import long_form_multiple_formats

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
STUDIES = ("cheney2017", "shen2021", "pravin2024", "faults")


def _cells(nb) -> list[tuple[str, str, list[str]]]:
    """(type, source, tags) per cell: what a .ipynb and its .py twin must agree on."""
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


def _code_trees(nb) -> list[ast.Module]:
    return [ast.parse(c.source, filename=f"cell {c.get('id')}") for c in nb.cells if c.cell_type == "code"]


def _read(study: str):
    return nbformat.read(NOTEBOOKS / f"{study}.ipynb", as_version=4)


def test_templates_are_the_three_studies():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(STUDIES)
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.py")) == sorted(STUDIES)


def test_generator_script_is_gone():
    assert not (NOTEBOOKS / "make_notebooks.py").exists()


@pytest.mark.parametrize("study", STUDIES)
def test_pairing_is_declared(study):
    """jupytext (CLI, Jupyter) pairs <study>.ipynb with <study>.py in percent format."""
    config = load_jupytext_config(str(NOTEBOOKS / f"{study}.ipynb"))
    assert config is not None, "no jupytext configuration found for notebooks/"
    formats = long_form_multiple_formats(config.default_formats(str(NOTEBOOKS / f"{study}.ipynb")))
    assert {"extension": ".ipynb"} in formats
    assert {"extension": ".py", "format_name": "percent"} in formats


@pytest.mark.parametrize("study", STUDIES)
def test_py_twin_holds_the_same_cells(study):
    nb = jupytext.read(NOTEBOOKS / f"{study}.ipynb")
    twin = jupytext.read(NOTEBOOKS / f"{study}.py", fmt="py:percent")
    assert _cells(twin) == _cells(nb), (
        f"notebooks/{study}.ipynb and notebooks/{study}.py differ: run `jupytext --sync notebooks/{study}.ipynb`"
    )


@pytest.mark.parametrize("study", STUDIES)
def test_committed_without_outputs_and_with_stable_ids(study):
    nb = _read(study)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {cell.id} has outputs"
    assert [c.id for c in nb.cells] == [f"{study}-{i:02d}" for i in range(len(nb.cells))]


@pytest.mark.parametrize("study", STUDIES)
def test_one_parameters_cell_with_run(study):
    nb = _read(study)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells tagged `parameters`"
    (cell,) = tagged
    assert cell.cell_type == "code"
    names = {}
    for node in ast.parse(cell.source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.unparse(node)
        names[node.targets[0].id] = ast.literal_eval(node.value)  # papermill replaces literals
    assert "run" in names and "study" not in names, sorted(names)
    # the defaults point into this run's results/<run>/<study>/ tree
    for key in ("figures", "tables"):
        assert names[key] == f"results/{names['run']}/{study}/report/{key}"
    paths = [v for v in names.values() if isinstance(v, str) and v.startswith("results/")]
    assert paths and all(p.startswith(f"results/{names['run']}/{study}/") for p in paths), paths


@pytest.mark.parametrize("study", STUDIES)
def test_netperturb_imports_resolve(study):
    """Every `from netperturb... import name` / `import netperturb...` in the code cells runs
    against src/, and every attribute read off an imported netperturb module exists."""
    imports, bound = [], set()  # import statements; the names they bind
    trees = _code_trees(_read(study))
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "netperturb":
                imports.append(ast.unparse(node))
                bound.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "netperturb" for a in node.names):
                imports.append(ast.unparse(node))
                bound.update(a.asname or a.name.split(".")[0] for a in node.names)
    assert imports, f"notebooks/{study}.ipynb imports nothing from netperturb"
    attrs = sorted({(n.value.id, n.attr) for tree in trees for n in ast.walk(tree)
                    if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in bound})
    check = "\n".join([
        "import json, sys",
        *imports,
        "missing = [f'{v}.{a}' for v, a in json.loads(sys.argv[1]) if not hasattr(globals()[v], a)]",
        "assert not missing, f'no such attribute: {missing}'",
    ])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", check, json.dumps(attrs)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"imports of notebooks/{study}.ipynb fail:\n{check}\n{r.stderr[-3000:]}"
