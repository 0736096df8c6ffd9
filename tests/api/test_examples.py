"""The worked example of the API: examples/own_model.ipynb (paired with its .py twin by jupytext,
committed without outputs) runs top to bottom on the user model examples/mynet.py and the
digits as a DataLoader, and its numbers check out; the README snippet (examples/snippet.py,
at most 8 lines) runs as written and computes what its words say."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest
import torch
from jupytext.config import load_jupytext_config
from jupytext.formats import long_form_multiple_formats
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
NOTEBOOK = EXAMPLES / "own_model.ipynb"


def snippet_text() -> str:
    """The lines of examples/snippet.py between its markers, verbatim."""
    text = (EXAMPLES / "snippet.py").read_text()
    return text.split("# --- snippet ---\n", 1)[1].split("# --- end snippet ---", 1)[0]


def test_notebook_is_paired_and_clean():
    config = load_jupytext_config(str(NOTEBOOK))
    formats = long_form_multiple_formats(config.default_formats(str(NOTEBOOK)))
    assert {"extension": ".py", "format_name": "percent"} in formats
    nb = jupytext.read(NOTEBOOK)
    twin = jupytext.read(EXAMPLES / "own_model.py", fmt="py:percent")
    cells = lambda n: [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in n.cells]  # noqa: E731
    assert cells(twin) == cells(nb), "run `jupytext --sync examples/own_model.ipynb`"
    raw = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(raw)
    assert all(c.outputs == [] and c.execution_count is None for c in raw.cells if c.cell_type == "code")
    assert [c.id for c in raw.cells] == [f"own_model-{i:02d}" for i in range(len(raw.cells))]


def test_notebook_runs_and_its_numbers_check_out(tmp_path):
    papermill = pytest.importorskip("papermill")
    import netperturb as npt

    papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "out.ipynb"), parameters={"out_dir": str(tmp_path)},
                               cwd=str(EXAMPLES), kernel_name="python3", progress_bar=False)  # fmt: skip
    s = json.loads((tmp_path / "summary.json").read_text())
    grid = pd.read_csv(tmp_path / "grid.csv")
    assert s["clean"]["top1"] > 0.8 and s["clean"]["n_images"] == 540  # MyNet learned the digits
    assert 0 < s["bit_flip"]["sdc1"] <= 1 and s["changed"]["weight"] > 0
    assert "int8" in s["format_error"] and "in_format" in s["format_error"]
    assert s["int8_clean"]["n_images"] == 540 and not math.isnan(s["int8_bit_flip"]["sdc1"])
    # the grid: 4 layers x (5 + 5 levels) x 3 repeats, the workflow's seeds, level 0 the clean network
    assert len(grid) == 4 * 10 * 3 and grid["layer_label"].unique().tolist() == ["conv1", "conv2", "fc3", "fc4"]
    seeds = [npt.cell_seed(2017, "mynet", r.layer, r.perturbation, r.level, r.repeat) for r in grid.itertuples()]
    assert grid["seed"].tolist() == seeds
    zero = grid[grid["level"] == 0]
    assert (zero["top1"] == s["clean"]["top1"]).all() and (zero["sdc1"] == 0).all()
    full = grid[(grid["perturbation"] == "synapse_knockout") & (grid["level"] == 1)]
    assert (full["top1"] < s["clean"]["top1"]).all()
    # the row rebuilt with perturbed() has the row's numbers
    r = s["row"]
    row = grid[(grid["layer"] == r["layer"]) & (grid["perturbation"] == "bit_flip") & (grid["level"] == r["level"])
               & (grid["repeat"] == r["repeat"])].iloc[0]  # fmt: skip
    assert int(row["seed"]) == r["seed"]
    assert (s["rebuilt"]["top1"], s["rebuilt"]["sdc1"]) == (row["top1"], row["sdc1"])
    assert (tmp_path / "grid_top1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_readme_snippet_runs_as_written(monkeypatch, capsys):
    """At most 8 lines; run verbatim on a model and a DataLoader: it prints the clean and the
    faulty top-1 and SDC-1 of bit flips at rate 1e-3 in conv2, which are what their
    definitions give on an independent copy of the network, and the model is restored."""
    from netperturb.core.seeds import cell_generator
    from netperturb.perturb.registry import make_perturbation

    text = snippet_text()
    lines = [l for l in text.splitlines() if l.strip()]
    assert len(lines) <= 8, lines
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from mynet import make_mynet
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(digits.target)
    model = make_mynet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        for i in range(0, 1797, 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    model.eval()
    loader = DataLoader(TensorDataset(x, y), batch_size=200)
    before = copy.deepcopy(model.state_dict())
    scope = {"model": model, "loader": loader}
    exec(compile(text, str(EXAMPLES / "snippet.py"), "exec"), scope)
    printed = capsys.readouterr().out
    clean, hit = scope["clean"], scope["hit"]
    assert printed == f"top-1 {clean.top1:.3f} -> {hit.top1:.3f}, SDC-1 {hit.sdc1:.3f}\n"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the same numbers from the definitions, on a copy perturbed by hand
    net = copy.deepcopy(model)
    w = net.features[4].weight
    with torch.no_grad():
        ref_logits = model(x)
        w.copy_(make_perturbation("bit_flip")({"weight": w}, 1e-3, cell_generator(7))["weight"])
        logits = net(x)
    def right(z):  # true class the unique top-1, not NaN (exact top-1; ties would get partial credit)
        t = z.gather(1, y.view(-1, 1))
        return ~t.squeeze(1).isnan() & ((z > t).sum(1) == 0) & ((z == t).sum(1) == 1)

    finite = torch.isfinite(logits).all(1)
    assert clean.top1 == pytest.approx(float(right(ref_logits).float().mean())) and clean.top1 > 0.5
    assert hit.top1 == pytest.approx(float(right(logits).float().mean()))
    assert hit.due == pytest.approx(float((~finite).float().mean()))
    ok = right(ref_logits)
    assert hit.sdc1 == pytest.approx(float((ok & finite & ~right(logits)).sum() / ok.sum()))
    assert hit.top1 != clean.top1


def test_snippet_file_runs_as_a_script(tmp_path):
    """``python examples/snippet.py`` runs (its set-up lines, then the snippet)."""
    import subprocess

    r = subprocess.run([sys.executable, str(EXAMPLES / "snippet.py")], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("top-1 ") and "SDC-1" in r.stdout
