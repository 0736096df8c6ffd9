"""The HTML a reader opens, rendered by the workflow on the tiny cheney2017 config: no code, no
Traceback / Warning, no path of the machine that made it, the Findings block first; the run's
index page links only files that exist; and, where Chromium is installed, a screenshot."""

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

from netperturb.core.report import find_browser, html_problems, take_screenshots

from conftest import run_snakemake as run
from test_cheney2017_workflow import TINY

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("wf_html")
    (d / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    run(d)
    return d


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
