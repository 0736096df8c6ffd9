"""Rule pravin2024_train_<model>: train one initialisation with checkpoints (netperturb.studies.pravin2024.jobs.train_with_checkpoints)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.pravin2024.jobs import train_with_checkpoints

start_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
train_with_checkpoints(
    RunContext.from_job(snakemake),
    p.arch,
    p.train,
    int(snakemake.wildcards.init),
    dict(zip(p.epochs, snakemake.output.checkpoints)),
    snakemake.output.history,
    input_size=p.input_size,
)
