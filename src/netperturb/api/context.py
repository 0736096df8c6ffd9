"""One perturbed network at a time, in place: :func:`perturbed`, and :func:`in_format` (the
fault-free reference of a storage format)."""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from netperturb.api.inventory import find_layer
from netperturb.core.layers import LayerInfo
from netperturb.core.seeds import cell_generator
from netperturb.perturb.base import Perturbation
from netperturb.perturb.faults import FORMATS, format_model, is_activation_fault, to_format
from netperturb.perturb.grid import layer_params
from netperturb.perturb.registry import make_perturbation

__all__ = ["Applied", "FormatError", "perturbed", "in_format", "perturbed_now", "stored_format"]

#: Models inside a :func:`perturbed` block right now (model -> nesting depth).
_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, int]" = weakref.WeakKeyDictionary()


class FormatError(ValueError):
    """A fault in a storage format (fp16 / bf16 / int8) asked of a layer whose weights are not
    stored in that format."""


@dataclass(frozen=True)
class Applied:
    """What a :func:`perturbed` block applied (the ``as`` target of the ``with``).

    Attributes:
        layer: the perturbed layer.
        perturbation: the :class:`~netperturb.perturb.base.Perturbation` (its ``name`` and
            ``options()`` say what it is).
        level: the level (unit: ``perturbation.level_unit``).
        seed: the cell seed the draws came from.
        changed: role (``weight``, ``bias``, ``bn_weight``, ``bn_bias``) -> how many of its
            entries now hold other bits than before; empty for an activation fault, which
            changes no parameter.
    """

    layer: LayerInfo
    perturbation: Perturbation
    level: float
    seed: int
    changed: dict[str, int]


def perturbed_now(model: nn.Module) -> bool:
    """True while ``model`` is inside a :func:`perturbed` block."""
    return _ACTIVE.get(model, 0) > 0


def in_format(model: nn.Module, format: str, *, granularity: str = "tensor", include_bias: bool = False) -> nn.Module:
    """``model`` with every Conv2d / Linear weight (and bias, with ``include_bias``) stored in
    ``format`` and read back as float32: the fault-free reference network of a bit fault in
    that format (:func:`netperturb.perturb.faults.format_model`), exactly the network the
    workflow's faults study perturbs and compares with.

    Formats: ``fp32`` (the model itself, not a copy), ``fp16`` / ``bf16`` (cast round trip),
    ``int8`` (symmetric quantize-dequantize, one scale per tensor or per output channel:
    ``granularity="channel"``; source: Jacob et al. 2018 / ``torch.ao.quantization``'s
    symmetric qint8 observers). BatchNorm parameters stay float32. The copy is in the
    model's mode, on its device; the model itself is not changed.

    Raises:
        ValueError: unknown format or granularity.
    """
    return format_model(model, format, granularity, include_bias)


def stored_format(t: Tensor, format: str, granularity: str = "tensor") -> bool:
    """Whether tensor ``t`` is stored in ``format``: storing it there and reading it back
    changes no value (``to_format(t) == t``, :func:`netperturb.perturb.faults.to_format`)."""
    return bool(torch.equal(to_format(t.detach(), format, granularity), t.detach()))


def _check_format(info: LayerInfo, pert: Perturbation, params: dict[str, Tensor]) -> None:
    """A weight bit fault in fp16 / bf16 / int8 acts only on weights stored in that format;
    on others it would change every weight (the storing itself) at a rate that flips no bit."""
    fmt = getattr(pert, "format", "fp32")
    if fmt not in FORMATS or fmt == "fp32" or is_activation_fault(pert):
        return
    gran = getattr(pert, "granularity", "tensor")
    roles = pert.roles(params) if hasattr(pert, "roles") else ["weight"]
    for role in roles:
        if not stored_format(params[role], fmt, gran if role == "weight" else "tensor"):
            what = f"{fmt} with one scale per {gran}" if fmt == "int8" else fmt
            bias = ", include_bias=True" if getattr(pert, "include_bias", False) else ""
            raise FormatError(
                f"{pert.name} format={fmt!r}: the {role} of layer {info.path} ({info.label}) is not stored in {what}; "
                f"faulting it would first change every entry to its {fmt} value, at any level. Perturb the model in "
                f"that format instead: ref = netperturb.in_format(model, {fmt!r}, granularity={gran!r}{bias}) is the "
                f"fault-free {fmt} network (evaluate it as the reference), then perturbed(ref, ...)"
            )


def _changed(before: Tensor, after: Tensor) -> int:
    """Entries whose bytes differ between two tensors of the same shape and dtype."""
    a = before.detach().contiguous().view(torch.uint8).reshape(before.numel(), -1)
    b = after.detach().contiguous().view(torch.uint8).reshape(after.numel(), -1)
    return int((a != b).any(1).sum())


@contextmanager
def perturbed(
    model: nn.Module,
    layer: str | LayerInfo,
    perturbation: str | Perturbation,
    level: float,
    *,
    seed: int = 0,
    **options: Any,
) -> Iterator[Applied]:
    """Apply one grid cell's perturbation to ``model``'s own parameters for the duration of a
    ``with`` block, and restore every tensor bit for bit on exit (also when the block raises).

    The draw is exactly the one the grid engines make for a cell with this seed: the
    perturbation is called on the layer's tensors with ``cell_generator(seed)``
    (:mod:`netperturb.core.seeds`), as :func:`netperturb.run_grid` (every engine) does; so
    ``seed=row.seed`` of a :func:`~netperturb.run_grid` row rebuilds that row's network, and
    :func:`netperturb.evaluate` inside the block gives that row's numbers.

    Activation faults (``activation_bit_flip``, ``activation_stuck_at``, ``activation_noise``)
    change no parameter: a forward hook on the layer's output (after its BatchNorm when one
    follows it) applies them, removed on exit. Each image's index (transient faults draw per
    image) counts the images the layer has processed since the block was entered, so one
    pass over the data in order inside the block reproduces the engine's draws.

    Args:
        model: any ``nn.Module``.
        layer: module path (``features.0``), label (``conv1``) or a
            :class:`~netperturb.core.layers.LayerInfo` of :func:`netperturb.layers`.
        perturbation: a name of :data:`netperturb.perturb.registry.PERTURBATIONS`
            (``synapse_knockout``, ``node_knockout``, ``gaussian_noise``, ``bit_flip``,
            ``stuck_at``, ``multiplicative_noise``, ``activation_*``, ``filter_*``) built
            with ``**options`` (e.g. ``format="int8", bits="exponent"``), or a
            :class:`~netperturb.perturb.base.Perturbation` instance (then no options).
        level: in the perturbation's unit (fraction of weights / nodes for knockouts, weight
            s.d. multiples for Gaussian noise, bit error rate for bit faults, threshold for
            filters); 0 changes nothing.
        seed: the cell seed (an int in [0, 2**63)); :func:`netperturb.cell_seed` gives the
            workflow's seed of a (study seed, model, layer, perturbation, level, repeat) cell.

    Yields:
        :class:`Applied`: what was applied (e.g. how many weights changed).

    Raises:
        LayerSelectionError: ``layer`` names no layer or several.
        ValueError: unknown perturbation or option, options with an instance, a level out
            of range; an activation fault on an attention's input projection (``in_proj``:
            it has no output of its own).
        FormatError: a weight bit fault in ``fp16`` / ``bf16`` / ``int8`` on a layer whose
            weights are not stored in that format (the message names the format and the
            remedy: :func:`in_format`); a fault there would silently change every weight.
    """
    info = find_layer(model, layer)
    if isinstance(perturbation, Perturbation):
        if options:
            raise ValueError(f"perturbed: options {sorted(options)} given with a Perturbation instance; "
                             "pass its name instead, or build it with those options")  # fmt: skip
        pert = perturbation
    else:
        pert = make_perturbation(perturbation, **options)
    level = pert.check_level(level)
    seed = int(seed)
    if is_activation_fault(pert):
        from netperturb.perturb.engine.hooks import output_module

        module = output_module(model, info)  # the BN after the layer, else its module; in_proj: ValueError
        seen = [0]

        def fault(_m, _inputs, out):
            index = torch.arange(seen[0], seen[0] + out.shape[0])
            seen[0] += int(out.shape[0])
            return pert.apply_activation(out, level, seed, index)

        handle = module.register_forward_hook(fault)
        _ACTIVE[model] = _ACTIVE.get(model, 0) + 1
        try:
            yield Applied(info, pert, level, seed, {})
        finally:
            handle.remove()
            _ACTIVE[model] -= 1
        return
    params = layer_params(model, info)
    _check_format(info, pert, params)
    saved = {role: t.detach().clone() for role, t in params.items()}
    _ACTIVE[model] = _ACTIVE.get(model, 0) + 1
    try:
        new = pert(params, level, cell_generator(seed))
        with torch.no_grad():
            for role, t in new.items():
                params[role].copy_(t)
        changed = {role: _changed(saved[role], params[role]) for role in new}
        yield Applied(info, pert, level, seed, changed)
    finally:
        with torch.no_grad():
            for role, t in saved.items():
                params[role].copy_(t)
        _ACTIVE[model] -= 1
