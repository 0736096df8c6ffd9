"""Rule prepare_<dataset>: decode a dataset into uint8 shards (netperturb.pipeline.prepare_dataset)."""

from netperturb.core.jobs import start_job
from netperturb.datasets.prepare import prepare_dataset

log = start_job(snakemake.log[0], snakemake.threads)
manifest = prepare_dataset(snakemake.wildcards.dataset, snakemake.output.shards, snakemake.params.options)
log.info("wrote %s", {k: v["count"] for k, v in manifest["splits"].items()})
