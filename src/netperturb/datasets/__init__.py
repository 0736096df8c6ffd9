"""Datasets as uint8 shards: the shard format (:mod:`.shards`), one module per dataset
(digits, mnist, cifar10, tiny_imagenet, imagenet) and one registry (:mod:`.registry`:
what the workflow knows before the shards exist; :mod:`.prepare`: preparation by name)."""

from netperturb.datasets.registry import DATASETS, dataset_info
from netperturb.datasets.shards import (
    SHARD_FORMAT,
    ShardError,
    load_split,
    read_manifest,
    write_shards,
)

__all__ = ["DATASETS", "dataset_info", "SHARD_FORMAT", "ShardError", "load_split", "read_manifest", "write_shards"]
