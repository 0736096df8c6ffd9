"""Rule cheney2017_merge: check the per-job tables and the baselines against the plan, then concatenate them
(netperturb.studies.cheney2017.jobs.merge_grid)."""

from netperturb.core.jobs import start_job
from netperturb.studies.cheney2017.jobs import merge_grid

log = start_job(snakemake.log[0])
inp, out = snakemake.input, snakemake.output
df = merge_grid(inp.runs, out.csv, out.parquet, planned=snakemake.params.planned, baselines=inp.baselines,
                 out_baseline=out.baseline)
log.info("merged %d jobs into %d rows", len(inp.runs), len(df))
