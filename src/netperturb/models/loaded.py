"""A model loaded for evaluation, with what the result tables record about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from netperturb.core.preprocess import Preprocess

if TYPE_CHECKING:
    from netperturb.models.expects import InputSpec

__all__ = ["LoadedModel"]


@dataclass
class LoadedModel:
    """A model ready to evaluate.

    Attributes:
        model: the network in ``eval()`` mode with ``requires_grad`` off, on ``device``.
        preprocess: uint8 -> input transform for this model.
        arch: architecture name.
        weights: provenance id of the weights (first 12 hex of the file's sha256, or a
            torchvision weights name).
        meta: free-form metadata stored with the weights (``source``, ``file``, ``sha256``,
            ``inputs`` for models given as files).
        inputs: what input the model expects (:class:`~netperturb.models.expects.InputSpec`),
            checked against the data's manifest before a job evaluates
            (:func:`netperturb.models.loading.check_inputs`); None: nothing to check.
    """

    model: nn.Module
    preprocess: Preprocess
    arch: str
    weights: str
    meta: dict[str, Any]
    inputs: "InputSpec | None" = None
