"""The model registry: our small models by name, with their input size (as torchvision does for its models)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

__all__ = ["ModelSpec", "register_model", "list_models", "get_spec", "get_model", "adapt_first_conv", "build_meta"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        name: registry name (``arch`` in the config).
        builder: ``builder(num_classes=..., in_channels=...) -> nn.Module``.
        input_size: side of the square input the architecture is built for (pixels).
        description: one line, with the source of the architecture.
    """

    name: str
    builder: Callable[..., nn.Module]
    input_size: int
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, input_size: int, description: str):
    """Decorator that registers ``builder`` under ``name``."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelSpec(name, builder, input_size, description)
        return builder

    return deco


def list_models() -> list[str]:
    """Names of netperturb's own models (torchvision's are listed by
    ``torchvision.models.list_models(module=torchvision.models)``)."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec | None:
    """The :class:`ModelSpec` of one of our models, or None for a torchvision name."""
    return _REGISTRY.get(name)


def get_model(name: str, *, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A randomly initialised model by name: ours first, then torchvision classifiers.

    Args:
        name: e.g. ``"lenet5"``, ``"alexnet_digits"``, ``"alexnet"``, ``"resnet18"``.
        num_classes: number of outputs.
        in_channels: input channels. Torchvision models are built for 3; for any other count
            their first ``Conv2d`` (the stem: ``conv1`` of ResNet, ``features.0`` of
            SqueezeNet, ``conv1.0`` of ShuffleNet V2, ...) is replaced by one with the same
            output channels, kernel, stride, padding, dilation, groups and bias but
            ``in_channels`` inputs (see :func:`adapt_first_conv`).

    Raises:
        ValueError: the name is neither ours nor a torchvision classification model.
    """
    spec = _REGISTRY.get(name)
    if spec is not None:
        return spec.builder(num_classes=num_classes, in_channels=in_channels)
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ValueError(
            f"unknown model {name!r}; netperturb models: {', '.join(list_models())}; "
            "or any torchvision classifier (torchvision.models.list_models())"
        )
    kwargs = {"num_classes": num_classes}
    if name.startswith(("inception", "googlenet")):
        kwargs["init_weights"] = False
        kwargs["aux_logits"] = False
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if in_channels != 3:
        adapt_first_conv(model, in_channels)
    return model


def adapt_first_conv(model: nn.Module, in_channels: int) -> nn.Module:
    """Replace the first ``Conv2d`` of ``model`` (in module order) by one taking
    ``in_channels`` inputs, in place; returns ``model``.

    The new convolution keeps every other hyper-parameter of the old one and gets PyTorch's
    default ``Conv2d`` initialisation, as Pravin et al. 2024 do for their MNIST models (the
    authors' notebooks replace ``conv1`` of ResNet-18/50 by ``nn.Conv2d(1, 64, 7, 2, 3,
    bias=False)``, ``features[0]`` of SqueezeNet and ``conv1[0]`` of ShuffleNet V2 likewise).
    Works on the ``meta`` device too.

    Raises:
        ValueError: the model has no ``Conv2d``, ``in_channels < 1``, or ``in_channels`` is not
            a multiple of the first convolution's ``groups``.
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            break
    else:
        raise ValueError(f"{type(model).__name__} has no Conv2d to adapt to {in_channels} input channels")
    if module.in_channels == in_channels:
        return model
    if in_channels % module.groups:
        raise ValueError(f"{path}: groups={module.groups} does not divide in_channels={in_channels}")
    new = nn.Conv2d(
        in_channels, module.out_channels, module.kernel_size, stride=module.stride, padding=module.padding,
        dilation=module.dilation, groups=module.groups, bias=module.bias is not None,
        padding_mode=module.padding_mode, device=module.weight.device, dtype=module.weight.dtype,
    )  # fmt: skip
    parent_path, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, child, new)
    return model


def build_meta(name: str, *, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """:func:`get_model` on the ``meta`` device: the module structure without memory, for
    listing layers at workflow-planning time."""
    with torch.device("meta"):
        return get_model(name, num_classes=num_classes, in_channels=in_channels)
