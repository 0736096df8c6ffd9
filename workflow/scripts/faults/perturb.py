"""Rule faults_perturb: one model x fault variant job over a part of the layers
(netperturb.studies.faults.jobs.perturb_layers)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.faults.jobs import perturb_layers

start_job(snakemake.log[0], snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
perturb_layers(RunContext.from_job(snakemake), snakemake.output[0], layers=p.layers, variant=w.variant,
               spec=dict(p.spec), repeats=p.repeats, engine=p.engine, max_replicas=p.max_replicas)  # fmt: skip
