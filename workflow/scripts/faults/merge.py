"""Rule faults_merge: concatenate the job tables and the baselines (netperturb.studies.faults.jobs.merge_faults)."""

from netperturb.core.jobs import start_job
from netperturb.studies.faults.jobs import merge_faults

log = start_job(snakemake.log[0])
df = merge_faults(snakemake.input.runs, snakemake.output.csv, snakemake.output.parquet)
merge_faults(snakemake.input.baselines, snakemake.output.baseline)
log.info("merged %d jobs into %d rows", len(snakemake.input.runs), len(df))
