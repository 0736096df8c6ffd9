"""Checkpoints of the models trained here: weights plus everything needed to evaluate them.

Format (``torch.save`` of a dict, loadable with ``weights_only=True``)::

    {"format": "netperturb-checkpoint/1", "arch": "lenet5", "num_classes": 10,
     "in_channels": 1, "preprocess": {...}, "state_dict": {...}, "meta": {...}}
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Mapping

import torch
from torch import nn

from netperturb.core.integrity import record_digest, sidecar_path
from netperturb.core.io import sha256_file, torch_save
from netperturb.core.preprocess import Preprocess
from netperturb.models import get_model
from netperturb.models.expects import InputSpec, apply_overrides
from netperturb.models.loaded import LoadedModel

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint", "load_model"]


CHECKPOINT_FORMAT = "netperturb-checkpoint/1"


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    arch: str,
    num_classes: int,
    in_channels: int,
    preprocess: Preprocess,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (weights are copied to the CPU first), and its sha256
    record ``<path>.sha256`` (:mod:`netperturb.core.integrity`), by which later damage to the
    file is found before it is used."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    sidecar_path(path).unlink(missing_ok=True)  # never a stale record beside a new file
    torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "arch": arch,
            "num_classes": int(num_classes),
            "in_channels": int(in_channels),
            "preprocess": preprocess.to_dict(),
            "state_dict": state,
            "meta": meta or {},
        },
        path,
    )
    record_digest(path)


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> LoadedModel:
    """Load a netperturb checkpoint onto ``device`` in eval mode.

    Its ``inputs`` (:class:`~netperturb.models.expects.InputSpec`) are those of the checkpoint's
    ``preprocess``: stored values in [0, 1 / scale], its mean and std, its input size (other
    sizes are resized to it on the device) and its channel count.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a netperturb checkpoint or its weights do not fit the
            architecture (message names the file). Only for a file the workflow made (it has
            the ``<file>.sha256`` record) does the message say to delete and remake it; for any
            other file it says what the file looks like and which model source reads it.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    made_here = sidecar_path(path).exists()
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if made_here:
            raise ValueError(
                f"checkpoint {path}: unreadable ({e}); the file is damaged (truncated or overwritten): "
                f"delete it and make it again (in the workflow: rm {path}, then run the same snakemake "
                "command: it retrains the model, with the same seed the same weights)"
            ) from None
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} file ({type(e).__name__}: {str(e)[:200]}){_source_hint(path)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} file{_source_hint(path)}")
    model = get_model(ckpt["arch"], num_classes=ckpt["num_classes"], in_channels=ckpt["in_channels"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"checkpoint {path}: weights do not fit {ckpt['arch']}: {e}") from None
    model.to(device).eval().requires_grad_(False)
    pre = Preprocess.from_dict(ckpt["preprocess"])
    dataset = (ckpt.get("meta") or {}).get("dataset")
    inputs = InputSpec(
        value_max=round(1 / pre.scale, 6), mean=pre.mean, std=pre.std, size=(pre.size, pre.size) if pre.size else None,
        resize=True, channels=int(ckpt["in_channels"]),
        described=f"the netperturb checkpoint {path} ({ckpt['arch']}{f', trained on {dataset}' if dataset else ''})",
    )  # fmt: skip
    return LoadedModel(
        model=model,
        preprocess=pre,
        arch=ckpt["arch"],
        weights=sha256_file(path)[:12],
        meta=dict(ckpt.get("meta", {})),
        inputs=inputs,
    )


def _source_hint(path) -> str:
    from netperturb.models.external import looks_like, sniff_model_file

    if sniff_model_file(path) not in (None, "netperturb"):
        return (f"; it looks like {looks_like(path)}: give that model source (models.<name>.source in the config, "
                "--source on the command line)")  # fmt: skip
    return "; give the model's source (models.<name>.source in the config, --source on the command line)"


def load_model(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    source: Mapping[str, Any] | None = None,
    *,
    example_shape: tuple[int, ...] | None = None,
) -> LoadedModel:
    """Load a configured model from ``path`` by its source (a spec of
    :func:`netperturb.models.sources.parse_model_spec`, as the workflow plans it):

    - None or ``source: netperturb``: a netperturb checkpoint (:func:`load_checkpoint`);
    - ``torchvision`` (or a spec with ``weights`` and no ``source``, as before 0.3): a
      torchvision classifier with pretrained weights read from ``path``
      (:func:`netperturb.models.weights.load_pretrained`, checked against ``sha256_prefix``);
    - ``timm``, ``python``, ``torchscript``, ``exported``: a model given as a file
      (:func:`netperturb.models.external.load_external`; ``example_shape`` (C, H, W) is the
      input a TorchScript file is converted for).

    ``source["preprocess"]`` (``models.<name>.preprocess``) overrides what the model expects of
    its input (:func:`netperturb.models.expects.apply_overrides`), and ``source["key"]`` names it
    in messages.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_checkpoint` / the loaders above.
        netperturb.models.weights.WeightsError: the weights file does not match its sha256 prefix.
    """
    kind = (source or {}).get("source") or ("torchvision" if (source or {}).get("weights") else "netperturb")
    if kind == "netperturb":
        loaded = load_checkpoint(path, device)
    elif kind == "torchvision":
        from netperturb.models.weights import load_pretrained

        loaded = load_pretrained(path, source["arch"], source["weights"], device, sha256_prefix=source.get("sha256_prefix"))
    else:
        from netperturb.models.external import load_external

        return load_external(path, source, device, example_shape=example_shape)
    if loaded.inputs is not None and source:
        key = source.get("key")
        inputs = replace(loaded.inputs, remedy_key=f"{key}.preprocess" if key and key.startswith("models.") else "models.<name>.preprocess",
                         described=f"model {key[len('models.'):]} ({loaded.inputs.described.removeprefix('the ')})"
                         if key and key.startswith("models.") else loaded.inputs.described)  # fmt: skip
        loaded = replace(loaded, inputs=apply_overrides(inputs, source.get("preprocess")))
    return loaded
