"""Rule cheney2017_perturb: one model x layer x perturbation job (netperturb.pipeline.perturb_layer)."""

from netperturb.core.jobs import start_job
from netperturb.studies.cheney2017.jobs import perturb_layer

start_job(snakemake.log[0], snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
perturb_layer(
    snakemake.input.checkpoint,
    snakemake.input.shards,
    snakemake.output[0],
    study=p.run,
    dataset=p.dataset,
    model_name=w.model,
    layer=w.layer,
    perturbation=w.perturbation,
    perturbation_options=p.options,
    levels=p.options["levels"],
    repeats=p.repeats,
    study_seed=p.seed,
    split=p.split,
    batch_size=p.batch_size,
    device=p.device,
    model_source=p.source,
    engine=p.engine,
    precision=p.precision,
    max_replicas=p.max_replicas,
    focus=p.focus,
)
