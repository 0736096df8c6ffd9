"""The dataset registry: what the workflow must know about each dataset before its shards exist, and one preparation entry point per dataset."""

from __future__ import annotations

from typing import Any

__all__ = ["DATASETS", "dataset_info"]


#: What the workflow must know about a dataset before its shards exist (to plan jobs).
DATASETS: dict[str, dict[str, Any]] = {
    "digits": {"num_classes": 10, "in_channels": 1, "eval_split": "test"},
    "mnist": {"num_classes": 10, "in_channels": 1, "eval_split": "test"},
    # ILSVRC 2012 validation set, decoded per weights' transform (netperturb.datasets.imagenet)
    "imagenet": {"num_classes": 1000, "in_channels": 3, "eval_split": "val"},
    # the datasets of Pravin et al. 2024 beyond MNIST
    "cifar10": {"num_classes": 10, "in_channels": 3, "eval_split": "test"},
    "tiny_imagenet": {"num_classes": 200, "in_channels": 3, "eval_split": "test"},
}


def dataset_info(name: str) -> dict[str, Any]:
    """``{"num_classes", "in_channels", "eval_split"}`` of a known dataset.

    Raises:
        ValueError: unknown dataset (lists the known ones).
    """
    try:
        return dict(DATASETS[name])
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None
