"""Rule shen2021_perturb: the internal perturbation grid on one run (netperturb.minmax_study.perturb_run)."""

from netperturb.core.jobs import start_job
from netperturb.studies.shen2021.jobs import perturb_run

start_job(snakemake.log[0], snakemake.threads)
p, o = snakemake.params, snakemake.params.options
perturb_run(
    snakemake.input.checkpoint,
    snakemake.input.shards,
    snakemake.output[0],
    study=p.run,
    dataset=p.dataset,
    lam=p.lam,
    seed=int(snakemake.wildcards.seed),
    study_seed=p.seed,
    perturbations=o["perturbations"],
    layers=o["layers"],
    repeats=o["repeats"],
    split=p.split,
    batch_size=o["batch_size"],
    device=p.device,
)
