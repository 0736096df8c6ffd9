"""What a job needs to run a model on a dataset: the model loaded from its source and checked
against the data (channels, value range, normalisation, size, classes), and the evaluation
split on the device."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping

import torch

from netperturb.core.preprocess import Preprocess
from netperturb.datasets.shards import load_split, read_manifest
from netperturb.models.expects import InputMismatchError, data_inputs, resolve_inputs
from netperturb.models.loaded import LoadedModel

if TYPE_CHECKING:
    from netperturb.core.context import RunContext

__all__ = ["model_preprocess", "eval_data", "check_inputs", "load_for_job"]

log = logging.getLogger("netperturb")


def eval_data(shard_dir, split: str, loaded: LoadedModel, device: torch.device):
    """The evaluation split on ``device`` when it is a GPU with room for it (25% kept free),
    else in (pinned) host memory. (What the model expects of the data is checked by
    :func:`check_inputs`.)

    Returns:
        (images uint8 (N, C, H, W), labels int64 (N,)).
    """
    images, labels = load_split(shard_dir, split)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if images.numel() + labels.numel() * 8 < 0.75 * free:
            return images.to(device), labels.to(device)
        return images.pin_memory(), labels.pin_memory()
    return images, labels


def check_inputs(loaded: LoadedModel, manifest: Mapping[str, Any], shard_dir) -> LoadedModel:
    """``loaded`` with the preprocessing its data needs, after checking that the data is what
    the model expects (:func:`netperturb.models.expects.resolve_inputs`) and, for a model given
    as a file, that it outputs one logit per class of the data.

    Raises:
        netperturb.models.expects.InputMismatchError: channels, value range, normalisation,
            size or class count disagree; the message names the model (source, file), the data
            (its manifest) and the remedy.
    """
    if loaded.inputs is None:
        return loaded
    described = f"dataset {manifest.get('dataset', '?')} ({shard_dir}/manifest.json)"
    own = loaded.preprocess if loaded.inputs.value_max is not None and loaded.inputs.mean is not None else None
    pre = resolve_inputs(loaded.inputs, own, manifest, data_described=described)
    out = replace(loaded, preprocess=pre)
    if loaded.meta.get("source") in ("timm", "python", "torchscript", "exported"):
        data = data_inputs(manifest)
        if data["size"] is not None:
            h, w = (pre.size, pre.size) if pre.size else data["size"]
            param = next(loaded.model.parameters())
            with torch.inference_mode():
                logits = loaded.model(torch.zeros(2, data["channels"], h, w, device=param.device, dtype=param.dtype))
            n = int(manifest["num_classes"])
            if logits.ndim != 2 or logits.shape[1] != n:
                raise InputMismatchError(
                    f"{loaded.inputs.described} and the data, {described}, disagree on the classes: the model outputs "
                    f"{tuple(logits.shape)} for 2 images, the data has {n} classes ({', '.join(manifest['classes'][:5])}"
                    f"{' ...' if n > 5 else ''}). Remedy: give a model with {n} outputs in the data's class order "
                    "(image folders: the sorted folder names), e.g. through the factory's kwargs."
                )
    log.info("%s: preprocessing %s", loaded.inputs.described, pre.to_dict())
    return out


def load_for_job(ctx: "RunContext") -> tuple[LoadedModel, torch.device]:
    """The model of a job's context on its device, checked against the job's data
    (:func:`check_inputs`): what every perturbation and baseline job starts with.

    Raises:
        FileNotFoundError, ValueError: see :func:`netperturb.models.checkpoints.load_model`;
        netperturb.models.expects.InputMismatchError: see :func:`check_inputs`.
    """
    from netperturb.core.evaluate import resolve_device
    from netperturb.models.checkpoints import load_model

    dev = resolve_device(ctx.device)
    manifest = read_manifest(ctx.shard_dir)
    data = data_inputs(manifest)
    size = ((ctx.source or {}).get("preprocess") or {}).get("input_size")
    if size is not None:
        size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(v) for v in size)[-2:]
    example = None if data["size"] is None else (data["channels"], *(size or data["size"]))
    loaded = load_model(ctx.model_file, dev, ctx.source, example_shape=example)
    return check_inputs(loaded, manifest, ctx.shard_dir), dev


def model_preprocess(manifest: Mapping[str, Any], arch: str, input_size: int | None = None) -> Preprocess:
    """The dataset's normalisation, resized to the model's input: ``input_size`` if given,
    else the registered architecture's own input size (LeNet-5: 32), else the dataset's."""
    from netperturb.models import get_spec

    pre = Preprocess.from_dict(manifest["preprocess"])
    spec = get_spec(arch)
    size = input_size or (spec.input_size if spec is not None else None) or pre.size
    return replace(pre, size=size)
