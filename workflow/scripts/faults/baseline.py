"""Rule faults_baseline: one fault-free reference network (netperturb.studies.faults.jobs.baseline)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.faults.jobs import baseline

start_job(snakemake.log[0], snakemake.threads)
baseline(RunContext.from_job(snakemake), snakemake.output[0], reference=snakemake.wildcards.reference)
