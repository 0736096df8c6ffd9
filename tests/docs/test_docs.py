"""The documentation: the site builds offline with warnings as errors, every internal link and
anchor of the built HTML resolves, the README stays short and free of project history, and
nothing in the repository cites a file outside it.

The build runs once per test session (about 30 CPU seconds, most of it importing the library
for the API pages); the notebook page is built without executing it here (``make docs``, which
CI runs, executes it)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
HISTORY = re.compile(r"session|lead's note|before issue|the issue's", re.I)
#: a file outside the repository: the team's design notes or the folder beside the checkout
OUTSIDE = re.compile("DESIGN" + r"\.md|\.\./" + "shared")


class _Page(HTMLParser):
    """The ids of one HTML page and the links it makes (href / src)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) is not None and tag in ("a", "link", "img", "script", "iframe", "source"):
                self.links.append(a[key])


def broken_links(site: Path) -> list[str]:
    """``page: link (why)`` for every internal link of the HTML pages under ``site`` whose file
    does not exist, or whose ``#anchor`` is not an id of the target page. ``_static/`` holds
    the theme's files (one of them a Jinja template named .html), not pages."""
    pages: dict[Path, _Page] = {}
    for html in sorted(site.rglob("*.html")):
        if "_static" in html.relative_to(site).parts:
            continue
        p = _Page()
        p.feed(html.read_text(encoding="utf-8", errors="replace"))
        pages[html.resolve()] = p
    bad = []
    for html, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("javascript:", "data:")):
                continue  # external: not checked (the build is offline)
            target = (html.parent / unquote(parts.path)).resolve() if parts.path else html
            rel = html.relative_to(site.resolve())
            if not target.is_relative_to(site.resolve()):
                bad.append(f"{rel}: {link} (outside the site)")
                continue
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                bad.append(f"{rel}: {link} (no such file)")
                continue
            anchor = unquote(parts.fragment)
            if anchor and target in pages and anchor not in pages[target].ids:
                bad.append(f"{rel}: {link} (no id {anchor!r} in {target.name})")
    return bad


def test_link_checker_finds_a_missing_page_and_a_missing_anchor(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/a.html#there">ok</a> <a href="sub/a.html#nowhere">x</a> '
        '<a href="missing.html">y</a> <a href="https://example.org/x.html">ext</a> <a href="#top" id="top">t</a>'
    )
    (tmp_path / "sub" / "a.html").write_text('<h1 id="there">A</h1><img src="../img.png">')
    assert broken_links(tmp_path) == [
        "index.html: sub/a.html#nowhere (no id 'nowhere' in a.html)",
        "index.html: missing.html (no such file)",
        "sub/a.html: ../img.png (no such file)",
    ]


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("sphinx") is None or importlib.util.find_spec("pydata_sphinx_theme") is None:
        pytest.skip("Sphinx / pydata-sphinx-theme not installed (the `docs` dependency group; make env installs it)")
    out = tmp_path_factory.mktemp("docs")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
           "-d", str(out / "doctrees"), "-D", "nb_execution_mode=off", str(REPO / "docs"), str(out / "html")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"sphinx-build failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return out / "html"


def test_docs_build_and_every_internal_link_resolves(site):
    for page in ("index.html", "getting-started.html", "studies/cheney2017.html", "studies/faults.html",
                 "guides/hardware-faults.html", "guides/own-model.html", "guides/cluster.html",
                 "reference/configuration.html", "reference/api.html", "design.html", "benchmarks.html",
                 "reproducibility.html"):  # fmt: skip
        assert (site / page).exists(), page
    assert broken_links(site) == []


def test_built_configuration_page_lists_every_schema_key(site):
    sys.path.insert(0, str(REPO / "docs" / "_ext"))
    import config_reference as cr

    html = (site / "reference" / "configuration.html").read_text()
    keys = [k.path for k in cr.schema_keys(cr.load_schema(REPO / "config" / "schema.yaml"))]
    missing = [k for k in keys if f">{k.replace('<', '&lt;').replace('>', '&gt;')}<" not in html.replace("</span><span class=\"pre\">", "")]
    assert not missing, missing


def test_api_page_documents_the_public_names(site):
    import netperturb

    html = (site / "reference" / "api" / "netperturb.html").read_text()
    for name in netperturb.__all__:
        assert f'id="netperturb.{name}"' in html or f'id="{name}"' in html, name
    data = (site / "reference" / "api" / "data-models.html").read_text()
    for name in ("netperturb.models.registry.register_model", "netperturb.models.checkpoints.save_checkpoint",
                 "netperturb.datasets.shards.write_shards", "netperturb.perturb.registry.make_perturbation"):  # fmt: skip
        page = data if ".perturb." not in name else (site / "reference" / "api" / "perturb.html").read_text()
        assert f'id="{name}"' in page, name


def _tracked(*paths: str) -> list[Path]:
    r = subprocess.run(["git", "ls-files", "-z", "--", *paths], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"not a git checkout: {r.stderr.strip()}")
    return [REPO / p for p in r.stdout.split("\0") if p]


def test_readme_is_short_links_resolve_and_has_no_history():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)\s]+)\)", readme):
        if not urlsplit(target).scheme:
            assert (REPO / urlsplit(target).path).exists(), target
    sources = [REPO / "README.md"] + [p for p in (REPO / "docs").rglob("*")
               if p.is_file() and p.suffix in (".md", ".rst", ".py", ".css")
               and not {"_build", "_generated", "jupyter_execute"} & set(p.relative_to(REPO / "docs").parts)]  # fmt: skip
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in sources
            for i, line in enumerate(p.read_text().splitlines(), 1) if HISTORY.search(line)]  # fmt: skip
    assert not hits, hits


def test_history_pattern_catches_what_it_should():
    assert HISTORY.search("the code at the start of this session took 64 min")
    assert HISTORY.search("as before issue 14") and HISTORY.search("The issue's 3x target")
    assert not HISTORY.search("netperturb 0.2.0 draws counter-based keys")
    assert OUTSIDE.search("see " + "../" + "shared/notes") and OUTSIDE.search("(" + "DESIGN" + ".md, x)")


def test_nothing_in_the_repository_cites_a_file_outside_it():
    hits = []
    for p in _tracked():
        if p.suffix in (".png", ".pdf", ".jpg") or not p.is_file():
            continue
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{p.relative_to(REPO)}:{i}: {line.strip()}")
    assert not hits, hits
