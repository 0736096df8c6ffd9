"""What the Cheney et al. 2017 grid plans from its config (section ``cheney2017``): the layers
of every model, the levels of every perturbation, one job per model x layer x perturbation.
Errors name the config key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from netperturb.core.config import expand_levels
from netperturb.core.layers import LayerInfo
from netperturb.models.select import resolve_layers

__all__ = ["GridPlan", "plan_grid"]


@dataclass(frozen=True)
class GridPlan:
    """The planned grid.

    Attributes:
        layers: model name -> its selected layers (depth order).
        levels: perturbation name -> its levels.
    """

    layers: dict[str, list[LayerInfo]]
    levels: dict[str, list[float]]

    def job_tables(self, out_dir: str) -> list[str]:
        """One CSV per (model, layer, perturbation) job: ``<out_dir>/runs/<model>/<perturbation>/<layer>.csv``."""
        return [
            f"{out_dir}/runs/{m}/{p}/{layer.path}.csv"
            for m, layers in self.layers.items()
            for layer in layers
            for p in self.levels
        ]

    def job_cells(self, out_dir: str, repeats: int) -> dict[str, list[list[float]]]:
        """Each job table (:meth:`job_tables`) -> the [level, repeat] cells its job computes
        (every level of its perturbation x repeats 0 .. repeats - 1); the merge checks it."""
        return {
            f"{out_dir}/runs/{m}/{p}/{layer.path}.csv": [[lv, r] for lv in levels for r in range(int(repeats))]
            for m, layers in self.layers.items()
            for layer in layers
            for p, levels in self.levels.items()
        }


def plan_grid(config: Mapping[str, Any], *, num_classes: int, in_channels: int) -> GridPlan:
    """Plan the grid of ``config`` (validated, defaults filled): every model of ``models``
    (its own ``layers`` if given, else ``cheney2017.layers``) x every perturbation of
    ``cheney2017.perturbations``.

    Raises:
        ConfigError: unknown architecture, a layer selection that matches nothing, bad levels
            (names the key).
    """
    section = config["cheney2017"]
    layers = {}
    for m, cfg in config["models"].items():
        own = "layers" in cfg
        layers[m] = resolve_layers(
            m,
            cfg,
            cfg["layers"] if own else section["layers"],
            num_classes=num_classes,
            in_channels=in_channels,
            key=f"models.{m}.layers" if own else "cheney2017.layers",
        )
    levels = {
        p: expand_levels(o["levels"], key=f"cheney2017.perturbations.{p}.levels")
        for p, o in section["perturbations"].items()
    }
    return GridPlan(layers, levels)
