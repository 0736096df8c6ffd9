"""Rule train: train one configured model (netperturb.pipeline.train_model)."""

from netperturb.core.jobs import start_job
from netperturb.models.train import train_model

start_job(snakemake.log[0], snakemake.threads)
train_model(
    snakemake.input.shards,
    snakemake.params.arch,
    snakemake.params.train,
    snakemake.output.checkpoint,
    snakemake.output.history,
    model_name=snakemake.wildcards.model,
    study=snakemake.params.run,
    input_size=snakemake.params.input_size,
    device=snakemake.params.device,
)
