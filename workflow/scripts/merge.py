"""Rule merge: concatenate per-job tables (netperturb.pipeline.merge_tables)."""

from netperturb.core.jobs import start_job
from netperturb.core.merge import merge_tables

log = start_job(snakemake.log[0])
df = merge_tables(snakemake.input.runs, snakemake.output.csv, snakemake.output.parquet)
merge_tables(snakemake.input.baselines, snakemake.output.baseline)
log.info("merged %d jobs into %d rows", len(snakemake.input.runs), len(df))
