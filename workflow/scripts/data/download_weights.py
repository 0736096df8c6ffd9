"""Rule download_weights: fetch a torchvision weights file, sha256-checked (netperturb.weights.fetch_weights)."""

from netperturb.core.jobs import start_job
from netperturb.models.weights import fetch_weights

log = start_job(snakemake.log[0])
path = fetch_weights(snakemake.params.url, snakemake.output.weights, snakemake.params.sha256_prefix)
log.info("wrote %s", path)
