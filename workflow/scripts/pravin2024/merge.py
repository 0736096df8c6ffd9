"""Rule pravin2024_merge_retraining: concatenate retraining tables and training histories (netperturb.core.merge.merge_tables)."""

from netperturb.core.jobs import start_job
from netperturb.core.merge import merge_tables
from netperturb.studies.pravin2024.jobs import ONE_PER, RETRAIN_COLUMNS

log = start_job(snakemake.log[0])
merge_tables(snakemake.input.retraining, snakemake.output.retraining, columns=RETRAIN_COLUMNS, one_per=ONE_PER)
merge_tables(snakemake.input.histories, snakemake.output.histories)
log.info("merged %d retraining tables", len(snakemake.input.retraining))
