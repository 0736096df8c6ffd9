"""Rule index: results/<run>/index.html, the config that produced the run and each study's copy of it
(netperturb.core.report.write_index; every study present in the run folder is listed)."""

from pathlib import Path

import yaml

from netperturb.core.io import atomic_path
from netperturb.core.jobs import start_job
from netperturb.core.report import software_versions, studies_in_run, write_index
from netperturb.studies import STUDIES

start_job(snakemake.log[0])
out, p = snakemake.output, snakemake.params
text = f"# validated, defaults filled in; from: {', '.join(p.files) or '(no file)'}\n" + yaml.safe_dump(dict(p.config), sort_keys=False)
for path in [out.config, *out.study_configs]:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
run_dir = Path(out.html).parent
write_index(run_dir, out.html, run=p.run, studies=studies_in_run(run_dir, STUDIES, p.studies), config_file=out.config,
            snakemake_report=p.snakemake_report, versions=software_versions())
