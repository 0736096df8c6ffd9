"""Where each configured model's weights come from, planned before any job runs: trained here
(results/<run>/models/) or torchvision weights (downloaded, sha256-checked), and which ImageNet
shard variant (the weights' resize + crop) each model reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from netperturb.core.config import ConfigError
from netperturb.models.weights import resolve_model_source

__all__ = ["SourcePlan", "plan_sources"]


@dataclass(frozen=True)
class SourcePlan:
    """The planned inputs of every configured model.

    Attributes:
        dataset: the config's ``dataset``.
        sources: model name -> :func:`~netperturb.models.weights.resolve_model_source`'s dict,
            or None for a model trained here.
        imagenet_variants: shard variant (``<transform_key>[-<n>-per-class]``) -> transform spec.
        weight_downloads: file name under resources/weights/ -> the source that fetches it.
    """

    dataset: str
    sources: dict[str, dict[str, Any] | None]
    imagenet_variants: dict[str, dict[str, Any]]
    weight_downloads: dict[str, dict[str, Any]]
    imagenet_suffix: str

    def shard_dir(self, model: str | None = None) -> str:
        """Folder of the decoded shards a model reads (ImageNet: those of its weights' transform)."""
        if self.dataset == "imagenet" and model is not None:
            key = self.sources[model]["transform_key"] + self.imagenet_suffix
            return f"resources/data/imagenet/{key}/shards"
        return f"resources/data/{self.dataset}/shards"

    def checkpoint(self, model: str, run_dir: str) -> str:
        """The weights file of a model: our checkpoint (trained here) or the torchvision file."""
        src = self.sources[model]
        return src["path"] if src is not None else f"{run_dir}/models/{model}.pt"

    def load_source(self, model: str) -> dict[str, Any] | None:
        """What ``load_model`` needs besides the file (None: a netperturb checkpoint); not the
        URL or path, so that a mirror or a moved file does not make the jobs rerun."""
        src = self.sources[model]
        return src and {k: src[k] for k in ("arch", "weights", "sha256_prefix")}


def plan_sources(config: Mapping[str, Any], *, num_classes: int) -> SourcePlan:
    """Plan the weights and shard variants of every model in ``config["models"]``.

    Raises:
        ConfigError: see :func:`~netperturb.models.weights.resolve_model_source`; also a model
            without ``weights`` on ImageNet (no training split here). Messages name the key.
    """
    dataset = config["dataset"]
    sources = {
        m: resolve_model_source(m, c, num_classes=num_classes) for m, c in config["models"].items()
    }
    if dataset == "imagenet":
        for m, src in sources.items():
            if src is None:
                raise ConfigError(
                    f"models.{m}.weights: dataset imagenet has no training split here; "
                    "give a torchvision weights name (e.g. IMAGENET1K_V1)"
                )
    per_class = config["datasets"].get("imagenet", {}).get("images_per_class")
    suffix = f"-{per_class}-per-class" if per_class else ""
    variants = {s["transform_key"] + suffix: s["transform"] for s in sources.values() if s is not None}
    downloads = {Path(s["path"]).name: s for s in sources.values() if s is not None and s["download"]}
    return SourcePlan(dataset, sources, variants, downloads, suffix)
