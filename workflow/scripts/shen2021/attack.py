"""Rule shen2021_attack: FGSM / PGD accuracy against eps (netperturb.studies.shen2021.jobs.attack_run)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.shen2021.jobs import attack_run

start_job(snakemake.log[0], snakemake.threads)
a = snakemake.params.attacks
attack_run(RunContext.from_job(snakemake), snakemake.output[0], lam=snakemake.params.lam,
           seed=int(snakemake.wildcards.seed), attacks=a["methods"], eps_values=a["eps"], pgd_steps=a["pgd_steps"],
           pgd_step_size=a.get("pgd_step_size"))  # fmt: skip
