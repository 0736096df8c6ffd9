"""Rule cheney2017_baseline: evaluate the unperturbed model (netperturb.studies.cheney2017.jobs.baseline)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.cheney2017.jobs import baseline

start_job(snakemake.log[0], snakemake.threads)
baseline(RunContext.from_job(snakemake), snakemake.output[0])
