"""Rule faults_perturb: one model x layer x fault variant job (netperturb.studies.faults.jobs.perturb_layer)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.faults.jobs import perturb_layer

start_job(snakemake.log[0], snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
perturb_layer(RunContext.from_job(snakemake), snakemake.output[0], layer=w.layer, variant=w.variant, spec=dict(p.spec),
              repeats=p.repeats, engine=p.engine, max_replicas=p.max_replicas)  # fmt: skip
