"""Rules pravin2024_sweep_layers / pravin2024_sweep_network: one filter sweep job (netperturb.filtering_jobs.sweep_layers / sweep_network)."""

from netperturb.studies.pravin2024.evaluator import AttackSpec
from netperturb.studies.pravin2024.jobs import sweep_layers, sweep_network
from netperturb.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
common = dict(
    study=p.run,
    dataset=p.dataset,
    model_name=w.fmodel,
    init=int(w.init),
    epoch=int(w.epoch),
    filters=p.filters,
    steps=p.steps,
    attack=AttackSpec.from_config(p.attack, p.eps),
    study_seed=p.seed,
    split=p.split,
    n_images=p.n_images,
    batch_size=p.batch_size,
    device=p.device,
    channels_last=p.channels_last,
)
args = (snakemake.input.checkpoint, snakemake.input.shards, snakemake.output[0])
if snakemake.rule == "pravin2024_sweep_layers":
    sweep_layers(*args, layers=p.layers, reuse_prefix=p.reuse_prefix, max_replicas=p.max_replicas, **common)
else:
    sweep_network(*args, layers=p.layers, grid=p.grid, **common)
