"""Rule cheney2017_baseline: evaluate the unperturbed model (netperturb.pipeline.baseline)."""

from netperturb.core.jobs import start_job
from netperturb.studies.cheney2017.jobs import baseline

start_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
baseline(
    snakemake.input.checkpoint,
    snakemake.input.shards,
    snakemake.output[0],
    study=p.run,
    dataset=p.dataset,
    model_name=snakemake.wildcards.model,
    study_seed=p.seed,
    split=p.split,
    batch_size=p.batch_size,
    device=p.device,
    model_source=p.source,
)
