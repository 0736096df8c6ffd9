"""Rule pravin2024_baseline: clean and adversarial accuracy of the unfiltered checkpoints (netperturb.studies.pravin2024.jobs.checkpoint_baselines)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.pravin2024.evaluator import AttackSpec
from netperturb.studies.pravin2024.jobs import checkpoint_baselines

start_job(snakemake.log[0], snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
checkpoint_baselines(
    RunContext.from_job(snakemake),
    dict(zip(p.epochs, snakemake.input.checkpoints)),
    snakemake.output[0],
    init=int(w.init),
    attack=AttackSpec.from_config(p.attack, p.eps),
    n_images=p.n_images,
    channels_last=p.channels_last,
    network_attack=None if p.network_eps is None else AttackSpec.from_config(p.attack, p.network_eps),
)
