"""The workflow end to end on a tiny config in a temporary directory, and the HTML a reader
opens from that run: no code, no Traceback / Warning, no path of the machine that made it, the
Findings block first; the run's index page links only files that exist; and, where Chromium is
installed, a screenshot. (One module, so that both read the same run.)"""

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest
import yaml

from netperturb.core.report import find_browser, html_problems, take_screenshots
from netperturb.perturb.grid import COLUMNS

from conftest import job_counts, run_snakemake as run

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")

# the tiny config of this study (runnable by hand too)
TINY = yaml.safe_load((REPO / ".test" / "config_cheney2017" / "config.yaml").read_text())
N_LAYERS = {"lenet5": 5, "alexnet_digits": 2}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("wf")
    (d / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    run(d)
    return d


@pytest.mark.workflow
def test_merged_table_shape_columns_and_baseline(workdir):
    res = workdir / "results" / "tiny" / "cheney2017"
    df = pd.read_csv(res / "perturbation.csv")
    n_levels = 3 + 2 + 3
    assert len(df) == sum(N_LAYERS.values()) * n_levels * TINY["cheney2017"]["repeats"]
    assert list(df.columns) == COLUMNS
    assert set(df["model"]) == set(TINY["models"])
    assert df.groupby("model")["layer"].nunique().to_dict() == N_LAYERS
    assert pd.read_parquet(res / "perturbation.parquet").equals(df)
    assert df[["top1", "top5"]].apply(lambda s: s.between(0, 1)).all().all()
    assert (df["study"] == "tiny").all() and (df["precision"] == "fp32").all()
    base = pd.read_csv(res / "baseline.csv", keep_default_na=False).set_index("model")
    zero = df[df["level"] == 0]
    for model, rows in zero.groupby("model"):
        for m in ("top1", "top5", "loss"):
            assert (rows[m] == base.loc[model, m]).all(), (model, m)
    # full synapse knockout of any layer -> every logit ties or the net is constant: chance-ish
    full = df[(df["perturbation"] == "synapse_knockout") & (df["level"] == 1.0) & (df["layer_label"] == "fc5")]
    assert len(full) == 2 and (full["top1"] - 0.1).abs().max() < 1e-12


@pytest.mark.workflow
def test_report_and_figures(workdir):
    rep = workdir / "results" / "tiny" / "cheney2017" / "report"
    html = (rep / "cheney2017.html").read_text()
    assert "Relative drop" in html and "rank-sum" in html and "<img" in html
    figs = {p.name for p in (rep / "figures").iterdir()}
    for model in TINY["models"]:
        assert {f"{model}_top1.png", f"{model}_top1.pdf", f"{model}_top5.png"} <= figs
    drop = pd.read_csv(rep / "tables" / "relative_drop.csv")
    assert len(drop) == sum(N_LAYERS.values()) * 3
    logs = sorted((workdir / "logs" / "tiny" / "cheney2017" / "perturb").rglob("*.log"))
    # one log per job: LeNet-5's 5 layers in parts of 2 (3 jobs), the AlexNet's 2 in one, x 3 perturbations
    assert len(logs) == (3 + 1) * 3, logs


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def _forbidden(workdir: Path) -> list[str]:
    """Absolute paths of this machine that must not reach the HTML."""
    return [str(workdir), str(workdir.resolve()), str(REPO), str(Path.home()), "/work/", "/root/", "/tmp/"]


def _htmls(workdir: Path) -> list[Path]:
    return sorted((workdir / "results" / "tiny").rglob("*.html"))


@pytest.mark.workflow
def test_report_html_is_clean(workdir):
    html = (workdir / "results" / "tiny" / "cheney2017" / "report" / "cheney2017.html").read_text()
    assert html_problems(html, _forbidden(workdir)) == []
    # code hidden: neither the template's nor papermill's parameters cell, no imports
    assert "injected-parameters" not in html and "import pandas" not in html and "papermill" not in html
    assert "<title>Internal perturbation of CNNs (Cheney, Schrimpf, Kreiman 2017)</title>" in html


@pytest.mark.workflow
def test_report_opens_with_findings_then_a_figure(workdir):
    html = (workdir / "results" / "tiny" / "cheney2017" / "report" / "cheney2017.html").read_text()
    body = html[html.index("<body"):]
    findings, img = body.find(">Findings<"), body.find("<img")
    assert 0 < findings < img, (findings, img)
    first_h2 = re.search(r"<h2[^>]*>(.*?)<", body).group(1)
    assert first_h2 == "Findings"
    # two findings per model: top layers, conv1; verdicts and the source table named
    assert body.count("source: <code>cheney2017/perturbation.csv, cheney2017/baseline.csv</code>") == 1
    assert body.count("of the weights removed") == 4
    assert re.search(r"(holds|does not hold)</strong> -- <em>Removing &gt;70% of the weights", body)
    rep = workdir / "results" / "tiny" / "cheney2017" / "report"
    assert (rep / "tables" / "findings.csv").exists()
    # the executed notebook keeps the code
    assert "from netperturb.studies.cheney2017.findings import finding_cells, findings" in (rep / "cheney2017.ipynb").read_text()


@pytest.mark.workflow
def test_index_links_resolve_and_no_html_of_the_run_is_dirty(workdir):
    root = workdir / "results" / "tiny"
    index = (root / "index.html").read_text()
    parser = _Links()
    parser.feed(index)
    assert parser.hrefs
    for href in parser.hrefs:
        u = urlparse(href)
        assert not u.scheme and not href.startswith("/"), f"not a relative link: {href}"
        assert (root / unquote(u.path)).exists(), f"index.html links a missing file: {href}"
    assert "cheney2017/report/cheney2017.html" in parser.hrefs and "config.yaml" in parser.hrefs
    assert "cheney2017/perturbation.csv" in parser.hrefs
    assert yaml.safe_load((root / "config.yaml").read_text())["run"] == "tiny"
    assert "torch" in index and "snakemake" in index  # software versions
    for page in _htmls(workdir):
        assert html_problems(page.read_text(), _forbidden(workdir)) == [], page


@pytest.mark.workflow
@pytest.mark.skipif(find_browser() is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_screenshots_in_headless_chromium(workdir, tmp_path):
    root = workdir / "results" / "tiny"
    pngs = take_screenshots([root / "index.html", root / "cheney2017" / "report" / "cheney2017.html"], tmp_path)
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.workflow
def test_rerun_does_nothing_and_an_interrupted_run_resumes(workdir):
    r = run(workdir, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr
    # the state a run killed during the perturbation jobs leaves: one job's table never
    # written (outputs are atomic), nothing merged or reported yet
    res = workdir / "results" / "tiny" / "cheney2017"
    lost = res / "runs" / "lenet5" / "node_knockout" / "layers_1of3.csv"  # conv1 and conv2 (layers_per_job: 2)
    before = pd.read_csv(lost)
    for p in (lost, res / "perturbation.csv", res / "perturbation.parquet", res / "baseline.csv"):
        p.unlink()
    r = run(workdir)
    counts = job_counts(r.stdout + r.stderr)
    assert counts.get("cheney2017_perturb") == 1 and counts.get("cheney2017_merge") == 1, counts
    assert "train" not in counts and "cheney2017_baseline" not in counts, counts
    assert pd.read_csv(lost).equals(before)


@pytest.mark.workflow
def test_lint_is_clean_and_default_config_plans():
    r = subprocess.run([SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr
    r = subprocess.run([SNAKEMAKE, "-n", "--cores", "2", "--quiet", "rules", "--forceall"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    counts = job_counts(r.stdout + r.stderr)
    # 2 models x 3 perturbations, every layer of a model in one job (cheney2017.layers_per_job: null)
    assert counts.get("cheney2017_perturb") == 6 and counts.get("train") == 2, counts
