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

from snakemake.utils import validate

from netperturb.core.config import (
    ConfigError,
    check_config_files,
    check_names,
    config_errors,
)
from netperturb.core.integrity import find_damage
from netperturb.datasets import dataset_info
from netperturb.datasets.prepare import PREPARERS
from netperturb.datasets.sources import plan_data
from netperturb.models.sources import plan_sources

# Snakemake's own YAML load keeps the last of a key given twice; read every config file of
# this run again, strictly (names the file, the key and both lines), before any job.
CONFIGFILES = list(dict.fromkeys(map(str, workflow.configfiles)))
try:
    check_config_files(CONFIGFILES)
    check_names(config)  # run and model names become folders under results/
except ConfigError as e:
    raise WorkflowError(f"invalid config: {e}")

SCHEMA = str(Path(workflow.basedir) / "config" / "schema.yaml")
try:
    validate(config, SCHEMA)  # also fills in the schema's defaults
except WorkflowError:
    raise WorkflowError(
        f"invalid config ({', '.join(CONFIGFILES) or 'no config file'}; "
        "checked against config/schema.yaml):\n  "
        + "\n  ".join(config_errors(config, SCHEMA))
    )

RUN = config["run"]
RESULTS = f"results/{RUN}"  # the run's folder: models/ and one folder per study
try:
    # a built-in dataset by name, or the config's own images (image_folder / tensors)
    DATA = plan_data(config)
    DATASET = DATA.name
    DATA_INFO = DATA.info
    # where each model comes from: trained here, torchvision, timm, python, torchscript, exported
    SOURCES = plan_sources(config, num_classes=DATA_INFO["num_classes"], data=DATA)
except ConfigError as e:
    raise WorkflowError(f"invalid config: {e}")


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


# Conda env of the rules that workflow/profiles/slurm sends to a GPU: the CUDA builds of
# PyTorch when config["gpu_env"] is set, else the CPU env of every other rule.
if config["gpu_env"]:
    GPU_CONDA_ENV = "../../envs/netperturb-gpu.yaml"
else:
    GPU_CONDA_ENV = "../../envs/netperturb.yaml"


# gpu is counted per job (scope "local"), so a cluster run is not capped by a global GPU
# total; locally, `--resources gpu=N` caps the jobs sharing N GPUs.
resource_scopes:
    gpu="local",
