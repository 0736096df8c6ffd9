"""Rule pravin2024_merge_retraining: concatenate retraining tables and training histories (netperturb.filtering_jobs.concat_tables)."""

from netperturb.studies.pravin2024.jobs import RETRAIN_COLUMNS
from netperturb.core.merge import concat_tables
from netperturb.core.io import write_csv
from netperturb.core.jobs import start_job

log = start_job(snakemake.log[0])
write_csv(concat_tables(snakemake.input.retraining, RETRAIN_COLUMNS), snakemake.output.retraining)
write_csv(concat_tables(snakemake.input.histories), snakemake.output.histories)
log.info("merged %d retraining tables", len(snakemake.input.retraining))
