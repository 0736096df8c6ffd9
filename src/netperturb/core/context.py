"""The run context: what every study job needs besides its own settings, as one object.

A study's job functions (``netperturb.studies.<study>.jobs``) take a :class:`RunContext` first,
instead of the same ten keywords each (run, dataset, model name, model file and source, shard
folder, evaluation split, study seed, batch size, device). The workflow builds it in one place:
every rule of a study passes ``params.context`` (``job_context()`` in ``common.smk``: the
values planned from the config) and its script calls :meth:`RunContext.from_job` on the
``snakemake`` object, which adds the files the rule's ``input:`` names (the model file, the
shard folder). The command line builds one from its options, a notebook by hand.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["RunContext"]


@dataclass(frozen=True)
class RunContext:
    """Everything a job shares with the other jobs of its study.

    Attributes:
        run: the run's name (``run`` in the config: outputs under ``results/<run>/``); the
            tables' ``study`` column holds it (as in netperturb 0.2).
        dataset: the dataset's name (the ``dataset`` column).
        shard_dir: the folder of the decoded shards (:mod:`netperturb.datasets.shards`).
        model: the model's config key (the ``model`` column; empty for jobs that name their
            own model, as shen2021's runs do).
        model_file: the file the model is loaded from (a checkpoint made here, downloaded
            weights, or the user's file); None for jobs that take their checkpoints explicitly.
        source: what :func:`netperturb.models.checkpoints.load_model` needs besides the file
            (:meth:`netperturb.models.sources.SourcePlan.load_source`; None: a checkpoint made here).
        split: the evaluation split (``test``, or ``val`` for ImageNet).
        study_seed: the config's ``seed``; every cell's seed derives from it.
        batch_size: images per forward pass in evaluation.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        progress: show progress bars (on stderr: the job's log).
    """

    run: str
    dataset: str
    shard_dir: str
    model: str = ""
    model_file: str | None = None
    source: Mapping[str, Any] | None = None
    split: str = "test"
    study_seed: int = 2017
    batch_size: int = 256
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "study_seed", int(self.study_seed))
        object.__setattr__(self, "batch_size", int(self.batch_size))

    def replace(self, **changes: Any) -> "RunContext":
        """A copy with some fields changed (e.g. another ``batch_size`` for one rule)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_job(cls, job: Any, **changes: Any) -> "RunContext":
        """The context of a workflow job, from the ``snakemake`` object of a rule's script
        (read by attribute; nothing here imports Snakemake).

        Reads ``job.params.context`` (a mapping of this class's fields, planned by the
        workflow), ``job.input.shards`` (the shard folder), ``job.input.checkpoint`` if the
        rule has one (the model file) and ``job.wildcards.model`` if there is one (the model
        name, unless the context names it). ``changes`` override the result.

        Raises:
            KeyError: the rule has no ``params.context`` or no ``input.shards``.
        """
        fields = dict(job.params.context)
        fields["shard_dir"] = str(job.input.shards)
        checkpoint = getattr(job.input, "checkpoint", None)
        if checkpoint is not None and not callable(checkpoint):
            fields["model_file"] = str(checkpoint)
        model = getattr(job.wildcards, "model", None)
        if model is not None and not callable(model) and not fields.get("model"):
            fields["model"] = str(model)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise KeyError(f"params.context has unknown field(s) {unknown}; RunContext has {sorted(known)}")
        return cls(**{**fields, **changes})
