"""Rule shen2021_perturb: the internal perturbation grid on one run (netperturb.studies.shen2021.jobs.perturb_run)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.shen2021.jobs import perturb_run

start_job(snakemake.log[0], snakemake.threads)
o = snakemake.params.options
perturb_run(RunContext.from_job(snakemake), snakemake.output[0], lam=snakemake.params.lam,
            seed=int(snakemake.wildcards.seed), perturbations=o["perturbations"], layers=o["layers"],
            repeats=o["repeats"])  # fmt: skip
