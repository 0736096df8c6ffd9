"""Rule cheney2017_perturb: one model x perturbation job over a part of the layers
(netperturb.studies.cheney2017.jobs.perturb_layers)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.cheney2017.jobs import perturb_layers

start_job(snakemake.log[0], snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
perturb_layers(RunContext.from_job(snakemake), snakemake.output[0], layers=p.layers, perturbation=w.perturbation,
               options=p.options, repeats=p.repeats, engine=p.engine, precision=p.precision,
               max_replicas=p.max_replicas, focus=p.focus)  # fmt: skip
