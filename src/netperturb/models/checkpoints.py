"""Checkpoints of the models trained here: weights plus everything needed to evaluate them.

Format (``torch.save`` of a dict, loadable with ``weights_only=True``)::

    {"format": "netperturb-checkpoint/1", "arch": "lenet5", "num_classes": 10,
     "in_channels": 1, "preprocess": {...}, "state_dict": {...}, "meta": {...}}
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from netperturb.core.integrity import record_digest, sidecar_path
from netperturb.core.io import sha256_file, torch_save
from netperturb.core.preprocess import Preprocess
from netperturb.models import get_model
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

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a netperturb checkpoint or its weights do not fit the
            architecture (message names the file).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"checkpoint {path}: unreadable ({e}); the file is damaged (truncated or overwritten): "
            f"delete it and make it again (in the workflow: rm {path}, then run the same snakemake "
            "command: it retrains the model, with the same seed the same weights)"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path}: not a {CHECKPOINT_FORMAT} file")
    model = get_model(ckpt["arch"], num_classes=ckpt["num_classes"], in_channels=ckpt["in_channels"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"checkpoint {path}: weights do not fit {ckpt['arch']}: {e}") from None
    model.to(device).eval().requires_grad_(False)
    return LoadedModel(
        model=model,
        preprocess=Preprocess.from_dict(ckpt["preprocess"]),
        arch=ckpt["arch"],
        weights=sha256_file(path)[:12],
        meta=dict(ckpt.get("meta", {})),
    )


def load_model(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    source: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a configured model: a netperturb checkpoint (``source`` None: a model trained
    here), or a torchvision classifier with pretrained weights read from ``path``
    (``source`` from :func:`netperturb.models.weights.resolve_model_source`: ``arch``, ``weights``,
    ``sha256_prefix``; see :func:`netperturb.models.weights.load_pretrained`).

    Raises:
        FileNotFoundError, ValueError: as :func:`load_checkpoint`.
        netperturb.models.weights.WeightsError: the weights file does not match its sha256 prefix.
    """
    if not source:
        return load_checkpoint(path, device)
    from netperturb.models.weights import load_pretrained

    return load_pretrained(path, source["arch"], source["weights"], device, sha256_prefix=source.get("sha256_prefix"))
