"""Report rendering shared by every study: save a figure as PNG/PDF, execute a papermill
template and convert it to HTML a reader opens (code hidden, no machine paths), the
"Findings" block every report opens with, and the index page of a run."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "save_figure", "render_notebook", "output_problems", "html_problems",
    "Finding", "findings_markdown", "findings_frame",
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


@dataclass(frozen=True)
class Finding:
    """One line of a report's "Findings" block: a claim of the paper, what this run found, the
    verdict, and the table the numbers come from (relative to the run's results folder)."""

    claim: str
    found: str
    verdict: str  # holds / does not hold / mixed / not shown (no significant effect) / not tested
    source: str


VERDICT_MARKS = {"holds": "✅", "does not hold": "❌", "mixed": "◐", "not shown": "○", "not tested": "–"}


def findings_markdown(findings: Sequence[Finding], title: str = "Findings") -> str:
    """The block a report opens with: one entry per finding, verdict first, source named."""
    lines = [f"## {title}", ""]
    if not findings:
        lines.append("_No finding could be computed from this run's tables._")
    for f in findings:
        mark = VERDICT_MARKS.get(f.verdict, "")
        lines.append(f"- **{mark} {f.verdict}** -- *{f.claim}*  \n  {f.found}  \n  <small>source: `{f.source}`</small>")
    return "\n".join(lines) + "\n"


def findings_frame(findings: Sequence[Finding]):
    """The findings as a table (``claim, found, verdict, source``), e.g. for tables/findings.csv."""
    import pandas as pd

    return pd.DataFrame([asdict(f) for f in findings], columns=["claim", "found", "verdict", "source"])
