"""Rule prepare_data_source: decode the config's own images (an image folder or a tensor file) into uint8 shards (netperturb.datasets.sources.prepare_data_source)."""

from netperturb.core.jobs import start_job
from netperturb.datasets.sources import prepare_data_source

log = start_job(snakemake.log[0], snakemake.threads)
manifest = prepare_data_source(snakemake.output.shards, snakemake.params.spec, threads=snakemake.threads)
log.info("wrote %s, skipped %d", {k: v["count"] for k, v in manifest["splits"].items()}, len(manifest["skipped"]))
