"""Rules pravin2024_sweep_layers / pravin2024_sweep_network: one filter sweep job (netperturb.studies.pravin2024.jobs.sweep_layers / sweep_network)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.pravin2024.evaluator import AttackSpec
from netperturb.studies.pravin2024.jobs import sweep_layers, sweep_network

start_job(snakemake.log[0], snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
common = dict(
    init=int(w.init),
    epoch=int(w.epoch),
    layers=p.layers,
    filters=p.filters,
    steps=p.steps,
    pulse_steps=p.pulse_steps,
    attack=AttackSpec.from_config(p.attack, p.eps),
    n_images=p.n_images,
    channels_last=p.channels_last,
)
ctx = RunContext.from_job(snakemake)
if snakemake.rule == "pravin2024_sweep_layers":
    sweep_layers(ctx, snakemake.output[0], reuse_prefix=p.reuse_prefix, max_replicas=p.max_replicas, **common)
else:
    sweep_network(ctx, snakemake.output[0], grid=p.grid, **common)
