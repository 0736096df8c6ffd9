"""Every perturbation by name (the config's ``perturbations`` keys)."""

from __future__ import annotations

from typing import Any

from netperturb.perturb.base import Perturbation
from netperturb.perturb.faults import FAULTS
from netperturb.perturb.filters import FILTERS
from netperturb.perturb.knockouts import NodeKnockout, SynapseKnockout
from netperturb.perturb.noise import GaussianNoise

__all__ = ["PERTURBATIONS", "make_perturbation", "PERTURBATION_TITLES", "LEVEL_LABELS"]


#: Every perturbation by its config name: the knockouts and noise of Cheney et al. 2017 and the
#: synaptic filters of Pravin et al. 2024 (``filter_low``, ``filter_high``, ``filter_pulse``), and the
#: hardware fault models (``bit_flip``, ``stuck_at``, ``multiplicative_noise``, ``activation_*``).
PERTURBATIONS: dict[str, type[Perturbation]] = {
    SynapseKnockout.name: SynapseKnockout,
    NodeKnockout.name: NodeKnockout,
    GaussianNoise.name: GaussianNoise,
    **{cls.name: cls for cls in FILTERS.values()},
    **FAULTS,
}


def make_perturbation(name: str, **options: Any) -> Perturbation:
    """Build a perturbation by name with its options (unknown options are an error).

    Raises:
        ValueError: unknown name (the message lists the known ones) or unknown option.
    """
    try:
        cls = PERTURBATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown perturbation {name!r}; known: {', '.join(sorted(PERTURBATIONS))}"
        ) from None
    try:
        return cls(**options)
    except TypeError as e:
        raise ValueError(f"perturbation {name!r}: bad options {options!r} ({e})") from None


#: Display names of the perturbations, and what their level means (figure titles and axes).
PERTURBATION_TITLES = {
    "synapse_knockout": "Synapse knockout",
    "node_knockout": "Node knockout",
    "gaussian_noise": "Gaussian weight noise",
    "bit_flip": "Weight bit flips",
    "stuck_at": "Weight stuck-at bits",
    "multiplicative_noise": "Multiplicative weight noise",
    "activation_bit_flip": "Activation bit flips",
    "activation_stuck_at": "Activation stuck-at bits",
    "activation_noise": "Multiplicative activation noise",
}
LEVEL_LABELS = {
    "synapse_knockout": "fraction of weights removed",
    "node_knockout": "fraction of nodes removed",
    "gaussian_noise": "noise s.d. / weight s.d.",
    "bit_flip": "bit error rate",
    "stuck_at": "bit error rate",
    "multiplicative_noise": "relative noise s.d.",
    "activation_bit_flip": "bit error rate",
    "activation_stuck_at": "bit error rate",
    "activation_noise": "relative noise s.d.",
}
