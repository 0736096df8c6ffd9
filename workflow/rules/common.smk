# Shared set-up: import the library from this checkout, validate the config, plan the inputs
# every study shares (datasets, weights, models trained here); wildcard constraints, targets.
# Each study's plan comes from the library (netperturb.studies.<study>.plan), in its own .smk.
import math
import os
import re
import sys
from pathlib import Path

# The workflow runs the library of its own checkout (src/), in this process and, through
# PYTHONPATH, in every job it starts, so workflow and library versions always match.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in [SRC, os.environ.get("PYTHONPATH", "")] if p)
)

from netperturb.core.config import ConfigError, parse_overrides
from netperturb.core.integrity import find_damage
from netperturb.datasets import dataset_info
from netperturb.datasets.prepare import PREPARERS
from netperturb.core.runfolder import record_run, unwritable_outputs
from netperturb.runconfig import check_run_config

# The whole check of the config, before any job, in the library (netperturb.runconfig), which
# `netperturb check-config` runs too: every config file read again strictly (a key given twice,
# a top level that is not a mapping), --config values read as in a file (Snakemake reads a
# mapping given there as strings), names that become folders, config/schema.yaml (fills in the
# defaults), the datasets' input folders, every study's plan, and the run folder (another
# config's outputs there). A bad key stops the run here.
CONFIGFILES = [os.path.relpath(f) for f in dict.fromkeys(map(str, workflow.configfiles))]
SCHEMA = str(Path(workflow.basedir) / "config" / "schema.yaml")
try:
    RUN_CONFIG = check_run_config(
        config,
        files=CONFIGFILES,
        schema=SCHEMA,
        overrides=parse_overrides(
            workflow.config_settings.config_args, workflow.config_settings.config
        ),
    )
except ConfigError as e:
    raise WorkflowError(f"invalid config: {e}")
PLANS = RUN_CONFIG.plans

RUN = config["run"]
RESULTS = f"results/{RUN}"  # the run's folder: models/ and one folder per study
# a built-in dataset by name, or the config's own images (image_folder / tensors)
DATA = PLANS["data"]
DATASET = DATA.name
DATA_INFO = DATA.info
# where each model comes from: trained here, torchvision, timm, python, torchscript, exported
SOURCES = PLANS["sources"]


# When a run starts (never in a dry run), before its first job: every folder that a job about
# to run writes must accept files (else Snakemake itself fails there, with a traceback, while
# it prepares the job); then the run folder records what this config puts in it, so that
# another config naming the same run is checked against it (netperturb.core.runfolder).
onstart:
    _dag = getattr(workflow, "dag", None)  # Snakemake 9's DAG (uv.lock pins the version)
    _bad = unwritable_outputs(
        f
        for job in (_dag.needrun_jobs() if _dag is not None else [])
        for f in [*job.output, *job.log, *([job.benchmark] if job.benchmark else [])]
    )
    if _bad:
        raise WorkflowError(
            "cannot write where the jobs to run write their outputs:\n  "
            + "\n  ".join(_bad)
            + "\nRemedy: make these folders writable (remount read-write, or chmod u+w), or run "
            "elsewhere (--directory); then run the same command again. Nothing was run."
        )
    record_run(RESULTS, config, CONFIGFILES)


def study_dir(study):
    """Where a study's outputs go: results/<run>/<study>."""
    return f"{RESULTS}/{study}"


def report_outputs(study, category):
    """The outputs of a study's report rule: the executed notebook, its HTML and the figures
    (both in the Snakemake report), and the tables it writes."""
    out = f"{study_dir(study)}/report"
    return dict(
        notebook=f"{out}/{study}.ipynb",
        html=report(
            f"{out}/{study}.html",
            category=category,
            caption=f"../report/{study}.rst",
        ),
        figures=report(
            directory(f"{out}/figures"),
            patterns=["{name}.png"],
            category=category,
            caption=f"../report/{study}_figure.rst",
        ),
        tables=directory(f"{out}/tables"),
    )


wildcard_constraints:
    dataset="|".join(PREPARERS),
    data_source=re.escape(os.path.basename(os.path.dirname(DATA.shard_dir))) if DATA.spec else "(?!)",
    model="|".join(map(re.escape, config["models"])),
    layer=r"[A-Za-z0-9_.]+",
    variant="|".join(map(re.escape, SOURCES.imagenet_variants)) or "(?!)",
    weights_file="|".join(map(re.escape, SOURCES.weight_downloads)) or "(?!)",


def shard_dir(wildcards=None):
    """Folder of the decoded dataset shards (ImageNet: those of the model's transform)."""
    return SOURCES.shard_dir(getattr(wildcards, "model", None))


def model_checkpoint(wildcards):
    """Weights of a configured model: our checkpoint (trained here), or the torchvision
    weights file (downloaded to resources/weights/, or models.<name>.weights_file).
    A damaged one (netperturb.core.integrity) stops the run here, while the jobs are
    planned: before any job starts or any output of a job about to rerun is deleted."""
    path = SOURCES.checkpoint(wildcards.model, RESULTS)
    planned = SOURCES.models[wildcards.model]
    if planned.user_file and planned.kind != "torchvision":
        return path  # the user's file: its jobs check it against the sha256 planned (never "delete it")
    src = SOURCES.load_source(wildcards.model)
    why = find_damage(path, sha256_prefix=src and src.get("sha256_prefix"))
    if why:
        if src is None:
            remedy = (
                f"made by the train rule: delete it (rm {path} {path}.sha256) and run the same "
                "command again: train remakes it (same seed: the same weights) when a job needs "
                f"it, or at once with {path} as the target of the same command"
            )
        elif path == f"resources/weights/{os.path.basename(path)}" and os.path.basename(path) in SOURCES.weight_downloads:
            remedy = (
                f"delete it (rm {path} {path}.sha256) and run the same command again: "
                f"download_weights fetches it when a job needs it, or at once with {path} as the target"
            )
        else:
            remedy = f"it is models.{wildcards.model}.weights_file: replace it with a good copy"
        raise WorkflowError(
            f"damaged input {path} (model {wildcards.model}): {why}. Remedy: {remedy}. "
            "Nothing was run and no output was deleted."
        )
    return path


def dataset_shards(name=None):
    """The shard folder of the run's dataset, or of another built-in dataset by name (a
    study's own `dataset` key)."""
    return DATA.shard_dir if name is None or name == DATASET else f"resources/data/{name}/shards"


def job_context(batch_size, model_wildcard="model", **fields):
    """params.context of a study's job rules: the netperturb.core.context.RunContext fields
    planned from the config (run, dataset, split, seed, batch size, device and, for a rule
    with a {model} wildcard, the model and its source; `model_wildcard` names a study's own
    model wildcard, whose models are its own checkpoints); each job's script adds its input
    files (RunContext.from_job). `fields` override (a study's own dataset or split)."""

    def context(wildcards):
        model = getattr(wildcards, model_wildcard, None)
        ctx = dict(run=RUN, dataset=DATASET, split=DATA_INFO["eval_split"], study_seed=config["seed"],
                   batch_size=batch_size, device=config["device"])
        if model is not None:
            ctx["model"] = model
            if model_wildcard == "model":
                ctx["source"] = SOURCES.load_source(model)
        return {**ctx, **fields}

    return context


def merged_tables(**paths):
    """Input function of a report rule: the merged tables it reads (name -> path), each checked
    against the sha256 record its merge wrote beside it (netperturb.core.integrity): a merged
    table is an output, so one edited by hand stops the run here, while the jobs are planned,
    instead of a report being rendered from it."""

    def inputs(wildcards):
        for path in paths.values():
            why = find_damage(path)
            if why:
                raise WorkflowError(
                    f"{path} was changed after its merge wrote it: {why}. A merged table is an output, "
                    "never an input: the report reads only what the merge wrote. Remedy: delete it "
                    f"(rm {path} {path}.sha256) and run the same command again: the merge writes it "
                    "again from the per-job tables (to change a result, change the config). Nothing "
                    "was run and no output was deleted."
                )
        return paths

    return inputs



def imagenet_archives(wildcards):
    """The configured ImageNet inputs that exist. A missing archive is not a planning error,
    so `snakemake -n` plans the whole grid before the archives are in place; the job itself
    stops with the key and path of what is missing."""
    opts = config["datasets"]["imagenet"]
    keys = ["val_dir", "devkit"] if opts.get("val_dir") else ["val_tar", "devkit"]
    return {k: opts[k] for k in keys if opts.get(k) and os.path.exists(opts[k])}


def job_resources(section):
    """What a rule's jobs ask of the executor, from a config section with gpu / mem_mb /
    runtime (cheney2017.resources, pravin2024.resources, datasets.imagenet): the config is the
    only source (workflow/profiles/slurm sets none of these). runtime (minutes) grows with the
    attempt: attempt n of a job (a retry after a time-out, --retries) asks for
    runtime x retry_runtime_factor^(n-1), rounded up to whole minutes."""
    res = {k: section[k] for k in ("gpu", "mem_mb") if k in section}
    minutes, factor = section["runtime"], config["retry_runtime_factor"]
    res["runtime"] = lambda wildcards, attempt: math.ceil(minutes * factor ** (attempt - 1))
    return res


# Final outputs of `rule all`. Each study's rule file appends its own when the study is listed
# in config["studies"]; index.smk adds the run's index page, which links them all.
TARGETS = []


# Conda env of the rules that can run on a GPU (those with a `resources` section: cheney2017
# and faults baseline / perturb, pravin2024 train / baseline / sweeps / retraining): the CUDA
# builds of PyTorch when their jobs ask for a GPU (resources.gpu >= 1) or config["gpu_env"]
# is set, else the CPU env of every other rule. A job that asks for a GPU in the CPU env
# would run on the node's CPU without a word (device: auto).
def conda_env(resources):
    """The `conda:` env of a rule whose jobs ask `resources` (a config `resources` section)."""
    if config["gpu_env"] or resources.get("gpu", 0) >= 1:
        return "../../envs/netperturb-gpu.yaml"
    return "../../envs/netperturb.yaml"


# gpu is counted per job (scope "local"), so a cluster run is not capped by a global GPU
# total; locally, `--resources gpu=N` caps the jobs sharing N GPUs.
resource_scopes:
    gpu="local",
