"""Rule cheney2017_merge: concatenate per-job tables (netperturb.studies.cheney2017.jobs.merge_grid)."""

from netperturb.core.jobs import start_job
from netperturb.studies.cheney2017.jobs import merge_grid

log = start_job(snakemake.log[0])
df = merge_grid(snakemake.input.runs, snakemake.output.csv, snakemake.output.parquet)
merge_grid(snakemake.input.baselines, snakemake.output.baseline)
log.info("merged %d jobs into %d rows", len(snakemake.input.runs), len(df))
