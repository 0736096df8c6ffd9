"""Rule prepare_imagenet: decode the ImageNet validation set for one transform (netperturb.pipeline.prepare_imagenet_dataset)."""

from netperturb.core.jobs import start_job
from netperturb.datasets.prepare import prepare_imagenet_dataset

log = start_job(snakemake.log[0], snakemake.threads)
manifest = prepare_imagenet_dataset(
    snakemake.output.shards, snakemake.config["datasets"]["imagenet"], snakemake.params.transform, threads=snakemake.threads
)
log.info("wrote %d images, skipped %d", manifest["splits"]["val"]["count"], len(manifest["skipped"]))
