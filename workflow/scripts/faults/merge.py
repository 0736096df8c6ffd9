"""Rule faults_merge: check the per-job tables and the baselines against the plan, then concatenate them
(netperturb.studies.faults.jobs.merge_faults)."""

from netperturb.core.jobs import start_job
from netperturb.studies.faults.jobs import merge_faults

log = start_job(snakemake.log[0])
inp, out = snakemake.input, snakemake.output
df = merge_faults(inp.runs, out.csv, out.parquet, planned=snakemake.params.planned, baselines=inp.baselines,
                   out_baseline=out.baseline)
log.info("merged %d jobs into %d rows", len(inp.runs), len(df))
