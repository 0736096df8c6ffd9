"""What the Cheney et al. 2017 grid plans from its config (section ``cheney2017``): the layers
of every model, the levels of every perturbation, one job per model x perturbation x part of
the layers (``cheney2017.layers_per_job``). Errors name the config key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from netperturb.core.config import expand_levels
from netperturb.core.layers import LayerInfo, layer_parts
from netperturb.models.select import resolve_layers

__all__ = ["GridPlan", "plan_grid"]


@dataclass(frozen=True)
class GridPlan:
    """The planned grid.

    Attributes:
        layers: model name -> its selected layers (depth order).
        levels: perturbation name -> its levels.
        focus: perturbation name -> (level, repeats): the findings' level of that
            perturbation's grid gets this many repeats (``cheney2017.finding_repeats``, synapse
            knockout at ``report.drop_level``); empty when not set or not above ``repeats``.
        parts: model name -> part name (``"<k>of<n>"``) -> the module paths one job perturbs
            (``cheney2017.layers_per_job``; :func:`netperturb.core.layers.layer_parts`).
    """

    layers: dict[str, list[LayerInfo]]
    levels: dict[str, list[float]]
    focus: dict[str, tuple[float, int]] = field(default_factory=dict)
    parts: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def job_tables(self, out_dir: str) -> list[str]:
        """One CSV per (model, perturbation, part of the layers) job:
        ``<out_dir>/runs/<model>/<perturbation>/layers_<k>of<n>.csv``."""
        return list(self.job_cells(out_dir, 1))

    def job_cells(self, out_dir: str, repeats: int) -> dict[str, list[list]]:
        """Each job table (:meth:`job_tables`) -> the [layer, level, repeat] cells its job
        computes (each of its layers x every level of its perturbation x repeats 0 .. repeats - 1,
        and at the findings' level of :attr:`focus` repeats 0 .. n - 1); the merge checks it."""

        def cells(p: str, levels: list[float], paths: list[str]) -> list[list]:
            lv_f, n_f = self.focus.get(p, (None, 0))
            n = {lv: max(int(repeats), n_f) if lv == lv_f else int(repeats) for lv in levels}
            return [[path, lv, r] for path in paths for lv in levels for r in range(n[lv])]

        return {
            f"{out_dir}/runs/{m}/{p}/layers_{part}.csv": cells(p, levels, paths)
            for m, parts in self.parts.items()
            for p, levels in self.levels.items()
            for part, paths in parts.items()
        }


def plan_grid(config: Mapping[str, Any], *, num_classes: int, in_channels: int) -> GridPlan:
    """Plan the grid of ``config`` (validated, defaults filled): every model of ``models``
    (its own ``layers`` if given, else ``cheney2017.layers``) x every perturbation of
    ``cheney2017.perturbations``, its layers in jobs of ``cheney2017.layers_per_job``; with ``cheney2017.finding_repeats`` above ``repeats``, synapse
    knockout at the grid level nearest ``report.drop_level`` gets that many repeats (``focus``).

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
    focus = {}
    extra = section.get("finding_repeats")
    if extra is not None and int(extra) > int(section["repeats"]) and levels.get("synapse_knockout"):
        grid = levels["synapse_knockout"]
        target = float(section.get("report", {}).get("drop_level", 0.7))
        focus["synapse_knockout"] = (min(grid, key=lambda lv: abs(lv - target)), int(extra))
    parts = {m: layer_parts(la, section.get("layers_per_job")) for m, la in layers.items()}
    return GridPlan(layers, levels, focus, parts)
