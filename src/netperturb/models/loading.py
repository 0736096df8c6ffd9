"""What a job needs to run a model on a dataset: the model's preprocessing and the evaluation split on the device."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from netperturb.core.preprocess import Preprocess
from netperturb.datasets.shards import load_split
from netperturb.models.loaded import LoadedModel

__all__ = ["model_preprocess"]


def eval_data(shard_dir, split: str, loaded: LoadedModel, device: torch.device):
    """The evaluation split, checked against the model's input size, on ``device`` when it
    is a GPU with room for it (25% kept free), else in (pinned) host memory."""
    images, labels = load_split(shard_dir, split)
    spec = loaded.meta.get("transform")
    if spec is not None:
        crop = list(spec["crop_size"]) * (2 if len(spec["crop_size"]) == 1 else 1)
        if list(images.shape[-2:]) != crop:
            raise ValueError(f"{shard_dir}: images are {list(images.shape[-2:])}, {loaded.weights} expects {crop}")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if images.numel() + labels.numel() * 8 < 0.75 * free:
            return images.to(device), labels.to(device)
        return images.pin_memory(), labels.pin_memory()
    return images, labels


def model_preprocess(manifest: Mapping[str, Any], arch: str, input_size: int | None = None) -> Preprocess:
    """The dataset's normalisation, resized to the model's input: ``input_size`` if given,
    else the registered architecture's own input size (LeNet-5: 32), else the dataset's."""
    from dataclasses import replace

    from netperturb.models import get_spec

    pre = Preprocess.from_dict(manifest["preprocess"])
    spec = get_spec(arch)
    size = input_size or (spec.input_size if spec is not None else None) or pre.size
    return replace(pre, size=size)
