"""Rule <study>_report*: execute a papermill template and convert it to HTML (netperturb.report.render_notebook)."""

from pathlib import Path

from netperturb.core.jobs import start_job
from netperturb.core.report import render_notebook

start_job(snakemake.log[0])
out = snakemake.output
parameters = {
    **{k: str(Path(v).resolve()) for k, v in snakemake.input.items() if k != "notebook"},
    **{k: str(Path(v).resolve()) for k, v in out.items() if k not in ("notebook", "html")},
    **dict(snakemake.params.items()),
}
render_notebook(snakemake.input.notebook, out.notebook, out.html, parameters)
