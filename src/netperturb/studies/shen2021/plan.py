"""What the Shen et al. 2021 study plans from its config: runs (lambda x seed) and their names; errors name the key."""

from __future__ import annotations

from typing import Any, Mapping

from netperturb.core.config import expand_levels
from netperturb.core.layers import select_layers
from netperturb.core.seeds import canonical_level

__all__ = ["run_name", "seed_name", "control_name", "check_config"]


def run_name(arch: str, lam: float, seed: int) -> str:
    """``{arch}_lam{lam}_seed{seed}``, lam written as :func:`~netperturb.core.seeds.canonical_level`
    (``lenet5_lam0.3_seed1``): the ``model`` column of every table of the study."""
    return f"{arch}_lam{canonical_level(lam)}_seed{int(seed)}"


def seed_name(arch: str, seed: int) -> str:
    """``{arch}_seed{seed}``: what random draws are keyed on (the same for every lambda)."""
    return f"{arch}_seed{int(seed)}"


def control_name(arch: str, seed: int) -> str:
    """``{arch}_shuffled_seed{seed}``: the ``model`` of the shuffled-label control run of a
    training seed (:func:`netperturb.studies.shen2021.jobs.train_run` with ``shuffle_labels``)."""
    return f"{arch}_shuffled_seed{int(seed)}"


def check_config(mm: Mapping[str, Any], *, num_classes: int, in_channels: int) -> dict[str, list]:
    """Check the ``shen2021`` config section (already schema-validated, defaults filled) where
    the schema cannot: layer selections against the architecture, level grids, lambdas that
    would share a path, ``report_eps`` on the eps grid.

    Returns:
        ``{"lams": [canonical lambda strings], "seeds": [...], "levels": {perturbation: [...]}}``.

    Raises:
        ConfigError: the message starts with the key (``shen2021.regularizer.layers: ...``).
    """
    from netperturb.core.config import ConfigError
    from netperturb.models.select import model_layers

    arch = mm["arch"]
    try:
        layers = model_layers(arch, num_classes=num_classes, in_channels=in_channels)
    except ValueError as e:
        raise ConfigError(f"shen2021.arch: {e}") from None
    for key, sel in (("shen2021.track_layers", mm["track_layers"]),
                     ("shen2021.regularizer.layers", mm["regularizer"]["layers"]),
                     ("shen2021.perturbation.layers", mm["perturbation"]["layers"])):  # fmt: skip
        try:
            select_layers(layers, sel)
        except ValueError as e:
            raise ConfigError(f"{key} (arch {arch!r}): {e}") from None
    lams = [canonical_level(v) for v in mm["lambdas"]]
    if len(set(lams)) != len(lams):
        raise ConfigError(f"shen2021.lambdas: values that round to the same 10 decimals: {mm['lambdas']}")
    if not any(abs(float(e) - float(mm["attacks"]["report_eps"])) < 1e-12 for e in mm["attacks"]["eps"]):
        raise ConfigError(f"shen2021.attacks.report_eps: {mm['attacks']['report_eps']} is not one of shen2021.attacks.eps {mm['attacks']['eps']}")
    levels = {
        p: expand_levels(o["levels"], key=f"shen2021.perturbation.perturbations.{p}.levels")
        for p, o in mm["perturbation"]["perturbations"].items()
    }
    return {"lams": lams, "seeds": [int(s) for s in mm["seeds"]], "levels": levels}
