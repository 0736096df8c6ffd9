"""Layering of the library (issue 12): the import-linter contracts in pyproject.toml hold and
can fail, no module imports itself through a circle, no module passes 600 lines."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]
LINT = str(Path(sys.executable).parent / "lint-imports")


def _lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([LINT, "--config", str(REPO / "pyproject.toml"), "--no-cache"], cwd=src.parent,
                          env=env, capture_output=True, text=True)  # fmt: skip


def test_contracts_hold():
    r = _lint(REPO / "src")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "Contracts: 3 kept, 0 broken." in r.stdout


def test_each_contract_fails_when_broken(tmp_path):
    breaks = {
        "core imports no study": ("core/_bad.py", "import netperturb.studies.pravin2024.scores\n"),
        "studies import no other study": ("studies/shen2021/_bad.py", "from netperturb.studies.cheney2017 import plan\n"),
        "nothing under src imports snakemake": ("perturb/_bad.py", "import snakemake\n"),
    }
    for name, (rel, line) in breaks.items():
        src = tmp_path / name.replace(" ", "_") / "src"
        shutil.copytree(REPO / "src" / "netperturb", src / "netperturb", ignore=shutil.ignore_patterns("__pycache__"))
        (src / "netperturb" / rel).write_text(line)
        r = _lint(src)
        assert r.returncode != 0, (name, r.stdout[-2000:])
        assert f"{name} BROKEN" in r.stdout and "Contracts: 2 kept, 1 broken." in r.stdout, r.stdout[-2000:]


def test_no_import_circle():
    graph = grimp.build_graph("netperturb", cache_dir=None)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_no_module_over_600_lines():
    long = {str(p.relative_to(REPO)): n for p in (REPO / "src").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}  # fmt: skip
    assert not long, long
