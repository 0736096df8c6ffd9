"""Report rendering shared by every study: save a figure as PNG/PDF, execute a papermill
template and convert it to HTML a reader opens (code hidden, no machine paths), the
"Findings" block every report opens with, and the index page of a run."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

# the findings model lives in netperturb.core.findings (documented there); its names stay importable from here
from netperturb.core.findings import VERDICT_COLORS, Finding, findings_frame, findings_markdown  # noqa: F401

__all__ = [
    "save_figure", "show_figure", "render_notebook", "output_problems", "html_problems", "software_versions", "run_index",
    "studies_in_run", "write_index", "find_browser", "take_screenshots",
]


def save_figure(fig, stem: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf`` (folders created). Returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = stem.with_suffix(f".{fmt}")
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
        paths.append(p)
    return paths


def show_figure(fig, stem: str | os.PathLike, *, display: bool = True, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 150, display_dpi: int = 100) -> list[Path]:
    """What a report does with each figure: :func:`save_figure` (PNG and PDF), then, with
    ``display``, show the saved PNG in the notebook (scaled to ``display_dpi``, the size the
    inline backend would show), then close ``fig``. The notebook shows the file that was
    saved instead of drawing the figure a third time (the inline backend's own PNG).

    Returns:
        the saved paths, as :func:`save_figure`.

    Raises:
        ValueError: ``display`` without ``"png"`` in ``formats``.
    """
    import matplotlib.pyplot as plt

    if display and "png" not in formats:
        raise ValueError(f"show_figure: display needs 'png' in formats, got {list(formats)}")
    try:
        paths = save_figure(fig, stem, formats, dpi)
    finally:
        plt.close(fig)
    if display:
        from IPython.display import Image, display as show
        from PIL import Image as PILImage

        png = paths[list(formats).index("png")]
        with PILImage.open(png) as im:
            width = round(im.width * display_dpi / dpi)
        show(Image(filename=str(png), width=width))
    return paths


def render_notebook(
    template: str | os.PathLike,
    out_ipynb: str | os.PathLike,
    out_html: str | os.PathLike,
    parameters: Mapping[str, Any],
    *,
    cwd: str | os.PathLike | None = None,
    kernel_name: str = "python3",
    title: str | None = None,
    show_code: bool = False,
) -> list[str]:
    """Execute ``template`` with papermill (injecting ``parameters`` after its
    ``parameters`` cell) and convert the result to self-contained HTML with nbconvert.

    The executed ``.ipynb`` keeps every cell; the HTML shows prose, figures and tables only
    (``show_code=False``: nbconvert's ``exclude_input``, which also hides the parameters cell
    and the one papermill injects). ``cwd`` is the kernel's working directory: pass paths in
    ``parameters`` relative to it (the report's folder), so that no path of this machine
    reaches the HTML and the notebook reruns where it lies.

    Returns:
        :func:`output_problems` of the executed notebook (stderr, warnings, errors): empty
        when the report is clean.

    Raises:
        papermill.PapermillExecutionError: a cell failed (the executed notebook is still
            written next to ``out_ipynb`` with a ``.failed.ipynb`` suffix for inspection).
    """
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    from netperturb.core.io import atomic_path

    out_ipynb, out_html = Path(out_ipynb), Path(out_html)
    out_ipynb.parent.mkdir(parents=True, exist_ok=True)
    failed = out_ipynb.with_suffix(".failed.ipynb")
    pm.execute_notebook(
        str(template), str(failed), parameters=dict(parameters), kernel_name=kernel_name,
        cwd=str(cwd) if cwd else None, progress_bar=False, log_output=False,
    )  # fmt: skip
    with atomic_path(out_ipynb) as tmp:
        tmp.write_bytes(failed.read_bytes())
    failed.unlink()
    nb = nbformat.read(out_ipynb, as_version=4)
    exporter = HTMLExporter(exclude_input=not show_code, exclude_input_prompt=True, exclude_output_prompt=True)
    if not show_code:  # the parameter cells, template's and papermill's, leave the page entirely
        exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags={"parameters", "injected-parameters"}), enabled=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title or _first_heading(nb) or out_html.stem}})
    with atomic_path(out_html) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return output_problems(nb)


def _first_heading(nb) -> str | None:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    return None


def output_problems(nb) -> list[str]:
    """What a reader should not meet in an executed notebook's outputs: text on stderr (warnings,
    progress bars), error outputs (tracebacks), and the words ``Warning`` / ``Traceback`` in any
    text output. One line per problem, naming the cell."""
    problems = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            where = f"cell {i} ({cell.get('id', '?')})"
            if out.get("output_type") == "error":
                problems.append(f"{where}: {out.get('ename')}: {out.get('evalue')}")
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                problems.append(f"{where}: stderr: {out.get('text', '').strip()[:200]}")
            else:
                text = out.get("text") or out.get("data", {}).get("text/plain", "")
                text = "".join(text) if isinstance(text, list) else str(text)
                if "Warning" in text or "Traceback" in text:
                    problems.append(f"{where}: {text.strip()[:200]}")
    return problems


def html_problems(html: str, forbidden: Iterable[str | os.PathLike] = ()) -> list[str]:
    """What must not be in a report's HTML: ``Traceback``, ``Warning`` (as ``grep`` finds them), and any
    of the ``forbidden`` strings (e.g. absolute paths of the machine that rendered it).
    Images (``data:`` URIs) are left out of the search. One line per problem."""
    text = re.sub(r"data:[a-z/+]+;base64,[A-Za-z0-9+/=\s]+", "", html)
    problems = [f"contains {w!r}" for w in ("Traceback", "Warning") if w in text]
    problems += [f"contains the path {str(f)!r}" for f in forbidden if str(f) and str(f) in text]
    return problems


VERSION_PACKAGES = ("netperturb", "torch", "torchvision", "numpy", "pandas", "scipy", "matplotlib", "snakemake",
                    "papermill", "nbconvert")  # fmt: skip


def software_versions(packages: Sequence[str] = VERSION_PACKAGES) -> dict[str, str]:
    """{package: installed version} (``importlib.metadata``), Python first; "not installed" where missing."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import netperturb

    out = {"python": platform.python_version()}
    for p in packages:
        if p == "netperturb":  # this checkout's library, not an installed copy
            out[p] = netperturb.__version__
            continue
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


def _finding_number(f: Mapping[str, Any]) -> str:
    """``quantity: estimate [lo, hi], n = ...; claim: < threshold (interval)`` of one row of a
    findings.csv (:data:`netperturb.core.findings.FINDING_COLUMNS`); "" for a row without an
    estimate (not tested, or a findings.csv written before the intervals)."""
    from netperturb.core.findings import format_interval

    def num(key: str) -> float:
        try:
            return float(f.get(key, "nan"))
        except (TypeError, ValueError):
            return float("nan")

    est = num("estimate")
    if est != est:
        return ""
    text = format_interval(est, num("lo"), num("hi"))
    n = num("n")
    if n == n and n > 0:
        text += f", n = {int(n)}"
    thr, direction = num("threshold"), str(f.get("direction", "") or "")
    if direction and thr == thr:
        text += f"; claim: {direction} {thr:.3g}"
    quantity, interval = str(f.get("quantity", "") or ""), str(f.get("interval", "") or "")
    return (f"{quantity}: " if quantity else "") + text + (f" ({interval})" if interval else "")


def _html_title(path: Path) -> str | None:
    m = re.search(r"<title>(.*?)</title>", path.read_text(encoding="utf-8", errors="replace")[:20000], re.S)
    return m.group(1).strip() if m else None


def run_index(run_dir: str | os.PathLike, studies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What a run folder holds, per study, as paths relative to ``run_dir``: ``report`` (HTML),
    ``notebook`` (executed .ipynb), ``title``, ``tables`` (the merged .csv / .parquet of the
    study folder), ``report_tables`` (what the report wrote), ``findings`` (rows of
    report/tables/findings.csv). Missing files are left out (``None`` / empty)."""
    import pandas as pd

    run_dir = Path(run_dir)
    out = {}
    for study in studies:
        d = run_dir / study
        html, nb = d / "report" / f"{study}.html", d / "report" / f"{study}.ipynb"
        fcsv = d / "report" / "tables" / "findings.csv"
        rel = lambda p: p.relative_to(run_dir).as_posix()
        out[study] = {
            "report": rel(html) if html.exists() else None,
            "notebook": rel(nb) if nb.exists() else None,
            "title": (_html_title(html) if html.exists() else None) or study,
            "tables": sorted(rel(p) for p in d.glob("*") if p.suffix in (".csv", ".parquet")) if d.exists() else [],
            "report_tables": sorted(rel(p) for p in (d / "report" / "tables").glob("*.csv")) if d.exists() else [],
            "findings": pd.read_csv(fcsv, keep_default_na=False).to_dict("records") if fcsv.exists() else [],
            "config": rel(d / "config.yaml") if (d / "config.yaml").exists() else None,
        }
    return out


def studies_in_run(run_dir: str | os.PathLike, known: Sequence[str], listed: Sequence[str] = ()) -> list[str]:
    """The studies an index of ``run_dir`` shows, in the order of ``known``: those ``listed``
    (this config's) and every other one with a report or a config in ``<run_dir>/<study>/``
    (another config's that joined the run folder, :mod:`netperturb.core.runfolder`)."""
    run_dir = Path(run_dir)
    has = lambda s: (run_dir / s / "report" / f"{s}.html").exists() or (run_dir / s / "config.yaml").exists()  # noqa: E731
    return [s for s in known if s in listed or has(s)] + [s for s in listed if s not in known]


def write_index(
    run_dir: str | os.PathLike,
    out_html: str | os.PathLike,
    *,
    run: str,
    studies: Sequence[str],
    config_file: str | os.PathLike | None = None,
    snakemake_report: str | os.PathLike | None = None,
    versions: Mapping[str, str] | None = None,
) -> Path:
    """Write ``results/<run>/index.html``: one section per study (its report, executed notebook,
    findings verdicts, merged tables and report tables), the config that produced the run, the
    Snakemake report when it exists, and the software versions. Every link is relative to the
    run folder, so the page works wherever the folder is copied; no path of this machine is
    written. Returns the path written."""
    from html import escape

    from netperturb.core.io import atomic_path

    run_dir, out_html = Path(run_dir), Path(out_html)
    index = run_index(run_dir, studies)
    link = lambda href, text=None: f'<a href="{escape(href)}">{escape(text or href)}</a>'
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>netperturb run {escape(run)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}"
        "h1{margin-bottom:.2em}section{border-top:1px solid #ddd;margin-top:1.5em}ul{padding-left:1.3em}"
        ".v{font-weight:600}.holds{color:#1a7f37}.does-not-hold{color:#cf222e}.undetermined,.mixed,.not-shown{color:#9a6700}"
        ".not-tested{color:#777}table{border-collapse:collapse}td,th{padding:.15em .8em;text-align:left;border-bottom:1px solid #eee}"
        "small{color:#666}</style></head><body>",
        f"<h1>netperturb run <code>{escape(run)}</code></h1>",
        f"<p>{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}: each report opens with its findings; "
        "the executed notebooks hold the code. Paths are relative to this folder.</p>",
    ]  # fmt: skip
    for study, info in index.items():
        parts.append(f"<section><h2>{escape(info['title'])}</h2><ul>")
        if info["report"]:
            parts.append(f"<li>Report: {link(info['report'])}"
                         + (f" (executed notebook with the code: {link(info['notebook'])})" if info["notebook"] else "") + "</li>")
        else:
            parts.append("<li>Report: not made in this run.</li>")
        if info["findings"]:
            parts.append("<li>Findings:<ul>")
            for f in info["findings"]:
                cls = str(f["verdict"]).replace(" ", "-")
                number = _finding_number(f)
                parts.append(f'<li><span class="v {cls}">{escape(str(f["verdict"]))}</span>: {escape(str(f["claim"]))}. '
                             + (f"<strong>{escape(number)}</strong>. " if number else "")
                             + f"{escape(str(f['found']))} <small>({escape(str(f['source']))})</small></li>")
            parts.append("</ul></li>")
        if info["tables"]:
            parts.append("<li>Merged tables: " + ", ".join(link(t) for t in info["tables"]) + "</li>")
        if info.get("config"):
            parts.append(f"<li>Config of this study (validated, defaults filled in): {link(info['config'])}</li>")
        if info["report_tables"]:
            parts.append("<li>Report tables: " + ", ".join(link(t, Path(t).name) for t in info["report_tables"]) + "</li>")
        parts.append("</ul></section>")
    parts.append("<section><h2>Provenance</h2><ul>")
    if config_file:
        parts.append(f"<li>Config (validated, defaults filled in): {link(Path(config_file).relative_to(run_dir).as_posix())}</li>")
    if snakemake_report and Path(snakemake_report).exists():
        parts.append(f"<li>Snakemake report (rules, run times, figures): {link(Path(snakemake_report).relative_to(run_dir).as_posix())}</li>")
    else:
        name = Path(snakemake_report).name if snakemake_report else "snakemake-report.html"
        parts.append(f"<li>Snakemake report: not made yet (<code>make report</code>, or <code>snakemake --report "
                     f"results/{escape(run)}/{escape(name)}</code> with this run's config).</li>")
    parts.append("</ul>")
    if versions:
        parts.append("<h3>Software versions</h3><table>"
                     + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in versions.items()) + "</table>")
    parts.append("</section></body></html>")
    with atomic_path(out_html) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return out_html


def find_browser(names: Sequence[str] = ("chromium", "chromium-browser", "google-chrome", "chrome")) -> str | None:
    """The first headless-capable Chromium on PATH, or None."""
    import shutil

    return next((shutil.which(n) for n in names if shutil.which(n)), None)


def take_screenshots(
    pages: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    browser: str | None = None,
    size: tuple[int, int] = (1280, 900),
    timeout: float = 120,
) -> list[Path]:
    """A PNG of the first screen (``size``, CSS pixels) of each HTML page, taken by headless
    Chromium, named after the page (``index.png``, ``cheney2017.png``). Returns the PNGs.

    Raises:
        FileNotFoundError: no Chromium on PATH (Debian: ``apt-get install chromium``).
    """
    import subprocess
    import tempfile

    browser = browser or find_browser()
    if not browser:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = []
    for page in map(Path, pages):
        png = out_dir / f"{page.stem}.png"
        with tempfile.TemporaryDirectory() as profile:  # a fresh profile: no state between pages
            cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                   f"--screenshot={png.resolve()}", page.resolve().as_uri()]  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
        shots.append(png)
    return shots
