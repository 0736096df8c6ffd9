"""Rule <study>_report*: execute a papermill template in the report's folder and convert it to
HTML (netperturb.core.report.render_notebook). Paths reach the notebook relative to that folder,
so that no path of this machine is in the report; what the notebook printed on stderr is logged."""

import os
import sys
from pathlib import Path

from netperturb.core.jobs import start_job
from netperturb.core.report import render_notebook

start_job(snakemake.log[0])
out = snakemake.output
here = Path(out.html).resolve().parent  # results/<run>/<study>/report: the kernel's cwd
rel = lambda p: os.path.relpath(Path(p).resolve(), here)
parameters = {
    **{k: rel(v) for k, v in snakemake.input.items() if k != "notebook"},
    **{k: rel(v) for k, v in out.items() if k not in ("notebook", "html")},
    **dict(snakemake.params.items()),
}
problems = render_notebook(snakemake.input.notebook, out.notebook, out.html, parameters, cwd=here)
for p in problems:
    print(f"report output problem: {p}", file=sys.stderr)
