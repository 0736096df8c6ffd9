"""Rule filtering_merge_retraining: concatenate retraining tables and training histories (netperturb.filtering_jobs.concat_tables)."""

from netperturb.filtering_jobs import RETRAIN_COLUMNS, concat_tables
from netperturb.io import write_csv
from netperturb.jobs import start_job

log = start_job(snakemake.log[0])
write_csv(concat_tables(snakemake.input.retraining, RETRAIN_COLUMNS), snakemake.output.retraining)
write_csv(concat_tables(snakemake.input.histories), snakemake.output.histories)
log.info("merged %d retraining tables", len(snakemake.input.retraining))
