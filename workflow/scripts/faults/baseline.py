"""Rule faults_baseline: one fault-free reference network (netperturb.studies.faults.jobs.baseline)."""

from netperturb.core.jobs import start_job
from netperturb.studies.faults.jobs import baseline

start_job(snakemake.log[0], snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
baseline(
    snakemake.input.checkpoint,
    snakemake.input.shards,
    snakemake.output[0],
    study=p.run,
    dataset=p.dataset,
    model_name=w.model,
    reference=w.reference,
    study_seed=p.seed,
    split=p.split,
    batch_size=p.batch_size,
    device=p.device,
    model_source=p.source,
)
