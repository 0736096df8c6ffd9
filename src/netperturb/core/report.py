"""Report rendering shared by every study: save a figure as PNG/PDF, execute a papermill template and convert it to HTML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["save_figure", "render_notebook"]


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
) -> None:
    """Execute ``template`` with papermill (injecting ``parameters`` after its
    ``parameters`` cell) and convert the result to self-contained HTML with nbconvert.

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
    body, _ = HTMLExporter(exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(
        nbformat.read(out_ipynb, as_version=4)
    )
    with atomic_path(out_html) as tmp:
        tmp.write_text(body, encoding="utf-8")
