# Shared set-up: import the library from this checkout, resolve the config, input functions.
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

from netperturb.core.config import ConfigError, config_errors, expand_levels
from netperturb.models.select import resolve_layers
from netperturb.datasets.registry import dataset_info
from netperturb.datasets.prepare import PREPARERS
from netperturb.models.weights import resolve_model_source

SCHEMA = str(Path(workflow.basedir) / "config" / "schema.yaml")
try:
    validate(config, SCHEMA)  # also fills in the schema's defaults
except WorkflowError:
    raise WorkflowError(
        "invalid config (config/schema.yaml):\n  "
        + "\n  ".join(config_errors(config, SCHEMA))
    )

STUDY = config["study"]
RESULTS = f"results/{STUDY}"
DATASET = config["dataset"]
DATA_INFO = dataset_info(DATASET)


def _layers_of(model):
    sel = config["models"][model].get("layers", config["perturbation"]["layers"])
    key = (
        f"models.{model}.layers"
        if "layers" in config["models"][model]
        else "perturbation.layers"
    )
    return resolve_layers(
        model,
        config["models"][model],
        sel,
        num_classes=DATA_INFO["num_classes"],
        in_channels=DATA_INFO["in_channels"],
        key=key,
    )


try:
    # pretrained torchvision weights (models.<name>.weights), or None for a model trained here
    MODEL_SOURCES = {
        m: resolve_model_source(m, c, num_classes=DATA_INFO["num_classes"])
        for m, c in config["models"].items()
    }
    if DATASET == "imagenet":
        for m, src in MODEL_SOURCES.items():
            if src is None:
                raise ConfigError(
                    f"models.{m}.weights: dataset imagenet has no training split here; "
                    "give a torchvision weights name (e.g. IMAGENET1K_V1)"
                )
    LAYERS = {m: _layers_of(m) for m in config["models"]}
    LEVELS = {
        p: expand_levels(o["levels"], key=f"perturbation.perturbations.{p}.levels")
        for p, o in config["perturbation"]["perturbations"].items()
    }
except ConfigError as e:
    raise WorkflowError(f"invalid config: {e}")


wildcard_constraints:
    dataset="|".join(PREPARERS),
    model="|".join(map(re.escape, config["models"])),
    perturbation="|".join(config["perturbation"]["perturbations"]),
    layer=r"[A-Za-z0-9_.]+",


# ImageNet shards are decoded per variant = the weights' transform (resize + crop), plus the
# subset (images_per_class) if any; models whose weights share it share the shards.
# WEIGHT_DOWNLOADS: the files that download_weights fetches.
_PER_CLASS = config["datasets"].get("imagenet", {}).get("images_per_class")
IMAGENET_SUFFIX = f"-{_PER_CLASS}-per-class" if _PER_CLASS else ""
IMAGENET_TRANSFORMS = {
    s["transform_key"] + IMAGENET_SUFFIX: s["transform"]
    for s in MODEL_SOURCES.values()
    if s is not None
}
WEIGHT_DOWNLOADS = {
    Path(s["path"]).name: s
    for s in MODEL_SOURCES.values()
    if s is not None and s["download"]
}


wildcard_constraints:
    variant="|".join(map(re.escape, IMAGENET_TRANSFORMS)) or "(?!)",
    weights_file="|".join(map(re.escape, WEIGHT_DOWNLOADS)) or "(?!)",


def shard_dir(wildcards=None):
    """Folder of the decoded dataset shards (ImageNet: those of the model's transform)."""
    if DATASET == "imagenet" and hasattr(wildcards, "model"):
        key = MODEL_SOURCES[wildcards.model]["transform_key"] + IMAGENET_SUFFIX
        return f"resources/data/imagenet/{key}/shards"
    return f"resources/data/{DATASET}/shards"


def model_checkpoint(wildcards):
    """Weights of a configured model: our checkpoint (trained here), or the torchvision
    weights file (downloaded to resources/weights/, or models.<name>.weights_file)."""
    src = MODEL_SOURCES[wildcards.model]
    return src["path"] if src is not None else f"{RESULTS}/models/{wildcards.model}.pt"


def imagenet_archives(wildcards):
    """The configured ImageNet inputs that exist. A missing archive is not a planning error,
    so `snakemake -n` plans the whole grid before the archives are in place; the job itself
    stops with the key and path of what is missing."""
    opts = config["datasets"].get("imagenet", {})
    keys = ["val_dir", "devkit"] if opts.get("val_dir") else ["val_tar", "devkit"]
    return {k: opts[k] for k in keys if opts.get(k) and os.path.exists(opts[k])}


def model_source(wildcards):
    """What load_model needs besides the file (None: a netperturb checkpoint); not the URL
    or path, so that a mirror or a moved file does not make the jobs rerun."""
    src = MODEL_SOURCES[wildcards.model]
    return src and {k: src[k] for k in ("arch", "weights", "sha256_prefix")}


def perturbation_tables():
    """One CSV per (model, layer, perturbation) job."""
    return [
        f"{RESULTS}/runs/{m}/{p}/{layer.path}.csv"
        for m, layers in LAYERS.items()
        for layer in layers
        for p in config["perturbation"]["perturbations"]
    ]


def baseline_tables():
    return [f"{RESULTS}/baseline/{m}.csv" for m in config["models"]]


# Final outputs of `rule all`. Each study's rule file appends its own when the study is listed
# in config["studies"].
TARGETS = []


# Conda env of the rules that workflow/profiles/slurm sends to a GPU (baseline, perturb): the
# CUDA builds of PyTorch when config["gpu_env"] is set, else the CPU env of every other rule.
if config["gpu_env"]:
    GPU_CONDA_ENV = "../../envs/netperturb-gpu.yaml"
else:
    GPU_CONDA_ENV = "../../envs/netperturb.yaml"

# What a baseline / perturbation job asks of the executor (perturbation.resources):
# gpu=1 puts them on GPU nodes under SLURM. gpu is counted per job (scope "local"), so a
# cluster run is not capped by a global GPU total; locally, `--resources gpu=N` caps the
# jobs sharing N GPUs.
JOB_RESOURCES = {
    k: config["perturbation"]["resources"][k] for k in ("gpu", "mem_mb", "runtime")
}


resource_scopes:
    gpu="local",
