"""Rule shen2021_evaluate: FGSM / PGD accuracy against eps, then the internal perturbation grid, on
one run's model (netperturb.studies.shen2021.jobs.evaluate_run)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.shen2021.jobs import evaluate_run

start_job(snakemake.log[0], snakemake.threads)
p, out = snakemake.params, snakemake.output
evaluate_run(RunContext.from_job(snakemake), out.robustness, out.perturbation, lam=p.lam,
             seed=int(snakemake.wildcards.seed), attacks=p.attacks, perturbation=p.perturbation)  # fmt: skip
