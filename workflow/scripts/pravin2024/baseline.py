"""Rule pravin2024_baseline: clean and adversarial accuracy of the unfiltered checkpoints (netperturb.filtering_jobs.checkpoint_baselines)."""

from netperturb.studies.pravin2024.evaluator import AttackSpec
from netperturb.studies.pravin2024.jobs import checkpoint_baselines
from netperturb.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
checkpoint_baselines(
    dict(zip(p.epochs, snakemake.input.checkpoints)),
    snakemake.input.shards,
    snakemake.output[0],
    study=p.run,
    dataset=p.dataset,
    model_name=w.fmodel,
    init=int(w.init),
    attack=AttackSpec.from_config(p.attack, p.eps),
    study_seed=p.seed,
    split=p.split,
    n_images=p.n_images,
    batch_size=p.batch_size,
    device=p.device,
    channels_last=p.channels_last,
    network_attack=None if p.network_eps is None else AttackSpec.from_config(p.attack, p.network_eps),
)
