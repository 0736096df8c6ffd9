"""Rule pravin2024_train_<model>: train one initialisation with checkpoints (netperturb.filtering_jobs.train_with_checkpoints)."""

from netperturb.studies.pravin2024.jobs import train_with_checkpoints
from netperturb.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
train_with_checkpoints(
    snakemake.input.shards,
    p.arch,
    p.train,
    int(snakemake.wildcards.init),
    dict(zip(p.epochs, snakemake.output.checkpoints)),
    snakemake.output.history,
    model_name=p.model,
    study=p.run,
    input_size=p.input_size,
    device=p.device,
)
