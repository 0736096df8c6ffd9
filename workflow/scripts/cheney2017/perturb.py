"""Rule cheney2017_perturb: one model x layer x perturbation job (netperturb.studies.cheney2017.jobs.perturb_layer)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.cheney2017.jobs import perturb_layer

start_job(snakemake.log[0], snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
perturb_layer(RunContext.from_job(snakemake), snakemake.output[0], layer=w.layer, perturbation=w.perturbation,
              options=p.options, repeats=p.repeats, engine=p.engine, precision=p.precision,
              max_replicas=p.max_replicas)  # fmt: skip
