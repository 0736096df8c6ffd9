"""What the hardware-fault study plans from its config (section ``faults``): its models and
layers, its fault variants (a name -> a fault model with options and levels), the fault-free
reference network of every variant, one job per model x variant x part of the layers
(``faults.layers_per_job``). Every check that the
schema cannot make is here, before any job, and names the key and the allowed values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from netperturb.core.config import ConfigError, expand_levels
from netperturb.core.layers import LayerInfo, layer_parts
from netperturb.models.select import resolve_layers
from netperturb.perturb.base import Perturbation
from netperturb.perturb.faults import ACTIVATION_FAULTS, FAULTS
from netperturb.perturb.faults.weights import _BitFault

__all__ = ["Variant", "FaultPlan", "plan_faults", "make_variant", "reference_name"]


@dataclass(frozen=True)
class Variant:
    """One configured fault variant (a key of ``faults.perturbations``).

    Attributes:
        name: the config key; the ``perturbation`` column of the tables and part of every
            cell's seed.
        fault: the fault model (a key of :data:`netperturb.perturb.faults.FAULTS`).
        options: its constructor options as configured (without ``fault`` and ``levels``).
        levels: the levels (bit error rate for bit faults, relative s.d. for noise).
        reference: the fault-free network the variant acts on (:func:`reference_name`).
    """

    name: str
    fault: str
    options: dict
    levels: list[float]
    reference: str

    @property
    def target(self) -> str:
        """``"activations"`` or ``"weights"``."""
        return "activations" if self.fault in ACTIVATION_FAULTS else "weights"

    @property
    def format(self) -> str:
        return self.options.get("format", "fp32") if self.fault in ("bit_flip", "stuck_at") else "fp32"

    @property
    def count(self) -> str:
        """How the bits a fault hits are counted at a rate (``binomial`` or ``exact``; ``""`` for noise)."""
        if self.fault in ("multiplicative_noise", "activation_noise"):
            return ""
        return self.options.get("count", "binomial")

    @property
    def bits(self) -> str:
        """The eligible bit positions as text (``all``, ``exponent``, ``30``, ``23-30``; ``""`` for noise)."""
        if self.fault in ("multiplicative_noise", "activation_noise"):
            return ""
        b = self.options.get("bits", "all")
        return b if isinstance(b, str) else ",".join(str(int(i)) for i in b)


def reference_name(fault: str, options: Mapping[str, Any]) -> str:
    """The fault-free network a variant acts on: ``fp32`` (the trained network), or the
    network stored in the bit fault's format: ``fp16``, ``bf16``, ``int8_tensor``,
    ``int8_channel`` (+ ``_bias`` when biases are stored in the format too)."""
    if fault not in ("bit_flip", "stuck_at"):
        return "fp32"
    fmt = options.get("format", "fp32")
    if fmt == "fp32":
        return "fp32"
    name = f"int8_{options.get('granularity', 'tensor')}" if fmt == "int8" else fmt
    return name + ("_bias" if options.get("include_bias", False) else "")


def reference_options(reference: str) -> dict[str, Any]:
    """Inverse of :func:`reference_name`: ``format``, ``granularity``, ``include_bias``."""
    include_bias = reference.endswith("_bias")
    base = reference[: -len("_bias")] if include_bias else reference
    fmt, _, gran = base.partition("_")
    return {"format": fmt, "granularity": gran or "tensor", "include_bias": include_bias}


def make_variant(name: str, spec: Mapping[str, Any], key: str) -> tuple[Variant, Perturbation]:
    """Build and check one variant (``spec`` = ``faults.perturbations.<name>``).

    Raises:
        ConfigError: unknown fault, an option the fault does not take, a bad option value
            (``format: int4``, ``bits: [40]`` for fp32, ``exponent`` for int8), a level
            outside the fault's range (a bit error rate above 1); the message starts with
            the key and names the allowed values.
    """
    fault = spec["fault"]
    if fault not in FAULTS:
        raise ConfigError(f"{key}.fault: {fault!r} unknown; allowed: {', '.join(FAULTS)}")
    options = {k: v for k, v in spec.items() if k not in ("fault", "levels")}
    cls = FAULTS[fault]
    try:
        pert = cls(**options)
    except TypeError as e:
        raise ConfigError(f"{key}: {fault} does not take these options ({e}); see config/schema.yaml, faults.perturbations") from None
    except ValueError as e:
        raise ConfigError(f"{key}.{e}") from None
    levels = expand_levels(spec["levels"], key=f"{key}.levels")
    for lv in levels:
        try:
            pert.check_level(lv)
        except ValueError:
            raise ConfigError(
                f"{key}.levels: {lv!r} is outside the allowed range [0, {pert.max_level:g}] of {fault} "
                f"({pert.level_unit})"
            ) from None
    pert.name = name  # the variant's name is the perturbation column and enters each cell's seed
    return Variant(name, fault, dict(options), levels, reference_name(fault, options)), pert


@dataclass(frozen=True)
class FaultPlan:
    """The planned study.

    Attributes:
        layers: model name -> its selected layers (depth order).
        variants: variant name -> :class:`Variant`.
        parts: model name -> part name (``"<k>of<n>"``) -> the module paths one job faults
            (``faults.layers_per_job``; :func:`netperturb.core.layers.layer_parts`).
    """

    layers: dict[str, list[LayerInfo]]
    variants: dict[str, Variant]
    parts: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def references(self) -> list[str]:
        """The fault-free networks the variants need (each gets a baseline row per model)."""
        return sorted({v.reference for v in self.variants.values()}, key=lambda r: (r != "fp32", r))

    def job_tables(self, out_dir: str) -> list[str]:
        """``<out_dir>/runs/<model>/<variant>/layers_<k>of<n>.csv``, one per job."""
        return list(self.job_cells(out_dir, 1))

    def job_cells(self, out_dir: str, repeats: int) -> dict[str, list[list]]:
        """Each job table (:meth:`job_tables`) -> the [layer, level, repeat] cells its job
        computes (each of its layers x every level of its variant x repeats 0 .. repeats - 1);
        the merge checks it."""
        return {f"{out_dir}/runs/{m}/{v}/layers_{part}.csv": [[path, lv, r] for path in paths for lv in var.levels
                                                              for r in range(int(repeats))]
                for m, parts in self.parts.items() for v, var in self.variants.items()
                for part, paths in parts.items()}  # fmt: skip

    def baseline_tables(self, out_dir: str) -> list[str]:
        """``<out_dir>/baseline/<model>/<reference>.csv``, one per model and reference network."""
        return [f"{out_dir}/baseline/{m}/{r}.csv" for m in self.layers for r in self.references()]


def plan_faults(config: Mapping[str, Any], *, num_classes: int, in_channels: int) -> FaultPlan:
    """Plan the ``faults`` section of ``config`` (validated, defaults filled): the models of
    ``faults.models`` (null: every model of ``models``) x ``faults.layers`` x every variant.

    Raises:
        ConfigError: a model that is not in ``models``, a layer selection that matches
            nothing, a bad variant (:func:`make_variant`); the message names the key.
    """
    section = config["faults"]
    names = list(config["models"]) if section["models"] is None else list(section["models"])
    unknown = [m for m in names if m not in config["models"]]
    if unknown:
        raise ConfigError(f"faults.models: {unknown[0]!r} is not a key of models; allowed: {', '.join(config['models'])}")
    layers = {
        m: resolve_layers(m, config["models"][m], section["layers"], num_classes=num_classes,
                          in_channels=in_channels, key="faults.layers")  # fmt: skip
        for m in names
    }
    variants = {
        name: make_variant(name, spec, f"faults.perturbations.{name}")[0]
        for name, spec in section["perturbations"].items()
    }
    metric_rate = section["report"]["compare_rate"]
    if not any(abs(lv - metric_rate) <= 1e-12 * max(1.0, metric_rate) for v in variants.values() for lv in v.levels):
        raise ConfigError(f"faults.report.compare_rate: {metric_rate!r} is not a level of any variant in faults.perturbations")
    return FaultPlan(layers, variants, {m: layer_parts(la, section.get("layers_per_job")) for m, la in layers.items()})


def is_bit_fault(perturbation: Perturbation) -> bool:
    """True for the weight bit faults (``bit_flip``, ``stuck_at``) that act in a format."""
    return isinstance(perturbation, _BitFault)
