"""What the Pravin et al. 2024 study plans from its config: checkpoint epochs, layers, parts, retraining epochs; errors name the key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from netperturb.core.config import ConfigError
from netperturb.core.layers import LayerInfo, layer_parts
from netperturb.models.select import resolve_layers

__all__ = ["checkpoint_epochs", "FilteringPlan", "plan_study", "attack_eps", "network_eps"]


def checkpoint_epochs(epochs: int, every: int) -> list[int]:
    """Epochs at which checkpoints are kept: ``every, 2 every, ...`` up to ``epochs``, and
    ``epochs`` itself.

    Raises:
        ValueError: ``epochs < 1`` or ``every < 1``.
    """
    if epochs < 1 or every < 1:
        raise ValueError(f"need epochs >= 1 and checkpoint_every >= 1, got {epochs}, {every}")
    return sorted(set(range(every, epochs + 1, every)) | {epochs})


@dataclass(frozen=True)
class FilteringPlan:
    """The planned study.

    Attributes:
        checkpoints: model -> the epochs at which checkpoints are kept.
        layers: model -> the layers swept in per-layer mode (depth order).
        retrain_at: model -> the checkpoint epoch that selective retraining starts from.
        parts: model -> part name (``"<k>of<n>"``) -> the module paths swept by that job.
    """

    checkpoints: dict[str, list[int]]
    layers: dict[str, list[LayerInfo]]
    retrain_at: dict[str, int]
    parts: dict[str, dict[str, list[str]]]

    def checkpoint_files(self, out_dir: str, model: str, init: int) -> dict[int, str]:
        """Checkpoint epoch -> ``<out_dir>/models/<model>/init<init>/epoch<e>.pt``."""
        return {e: f"{out_dir}/models/{model}/init{init}/epoch{e}.pt" for e in self.checkpoints[model]}

    def sweep_tables(self, out_dir: str, seeds: Sequence[int], modes: Sequence[str]) -> list[str]:
        """Every sweep job's table: per checkpoint, ``layers_<part>.csv`` per part (mode
        ``layer``) and ``network.csv`` (mode ``network``), under ``<out_dir>/runs/<model>/init<i>/epoch<e>/``."""
        out = []
        for m in self.checkpoints:
            for i in seeds:
                for e in self.checkpoints[m]:
                    run = f"{out_dir}/runs/{m}/init{i}/epoch{e}"
                    if "layer" in modes:
                        out += [f"{run}/layers_{part}.csv" for part in self.parts[m]]
                    if "network" in modes:
                        out.append(f"{run}/network.csv")
        return out


def plan_study(section: Mapping[str, Any], *, num_classes: int, in_channels: int) -> FilteringPlan:
    """Plan the ``pravin2024`` config section (schema-validated, defaults filled) where the
    schema cannot check it: checkpoint epochs, layer selections, the retraining checkpoint,
    the whole-network grid.

    Raises:
        ConfigError: the message starts with the key (``pravin2024.retraining.checkpoint: ...``).
    """
    epochs = {m: int(o.get("train", {}).get("epochs", 30)) for m, o in section["models"].items()}
    ckpts = {m: checkpoint_epochs(e, section["checkpoint_every"]) for m, e in epochs.items()}
    layers = {
        m: resolve_layers(
            m, o, section["layers"], num_classes=num_classes, in_channels=in_channels, key="pravin2024.layers"
        )
        for m, o in section["models"].items()
    }
    retrain_at = {}
    for m in section["models"]:
        at = section["retraining"]["checkpoint"] or ckpts[m][-1]
        if at not in ckpts[m]:
            raise ConfigError(
                f"pravin2024.retraining.checkpoint: epoch {at} is not a checkpoint of "
                f"model {m!r} (checkpoints: {ckpts[m]})"
            )
        retrain_at[m] = at
    grid = section["network_grid"]
    if grid != "auto" and grid[1] <= grid[0]:
        raise ConfigError(f"pravin2024.network_grid: need lo < hi, got {grid}")
    parts = {m: layer_parts(la, section["layers_per_job"]) for m, la in layers.items()}
    return FilteringPlan(ckpts, layers, retrain_at, parts)


def attack_eps(section: Mapping[str, Any], model: str, dataset: str) -> float:
    """Per-layer attack budget of a model on a dataset, in pixel units: the model's own
    ``models.<model>.eps.<dataset>``, else the dataset's ``attack.eps.<dataset>``.

    An override is per (model, dataset): a model's MNIST budget is never used on CIFAR-10.

    Raises:
        ConfigError: neither is set (names both keys).
    """
    own = (section["models"][model].get("eps") or {}).get(dataset)
    if own is not None:
        return float(own)
    try:
        return float(section["attack"]["eps"][dataset])
    except KeyError:
        raise ConfigError(
            f"pravin2024.attack.eps.{dataset}: not set, and pravin2024.models.{model}.eps.{dataset} neither"
        ) from None


def network_eps(section: Mapping[str, Any], model: str, dataset: str) -> float:
    """Whole-network attack budget, in pixel units: ``attack.network_eps.<dataset>`` (the
    authors' whole-network cell: MNIST ResNet-18 eps 0.03 of their units, against 0.38 per
    layer), else the model's per-layer budget (:func:`attack_eps`).

    Raises:
        ConfigError: as :func:`attack_eps`.
    """
    own = (section["attack"].get("network_eps") or {}).get(dataset)
    return float(own) if own is not None else attack_eps(section, model, dataset)
