"""Rule index: results/<run>/index.html and the config that produced the run (netperturb.core.report.write_index)."""

from pathlib import Path

import yaml

from netperturb.core.io import atomic_path
from netperturb.core.jobs import start_job
from netperturb.core.report import software_versions, write_index

start_job(snakemake.log[0])
out = snakemake.output
with atomic_path(out.config) as tmp:
    tmp.write_text(yaml.safe_dump(dict(snakemake.params.config), sort_keys=False), encoding="utf-8")
write_index(Path(out.html).parent, out.html, run=snakemake.params.run, studies=snakemake.params.studies,
            config_file=out.config, snakemake_report=snakemake.params.snakemake_report, versions=software_versions())
