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

from netperturb.config import ConfigError, config_errors, expand_levels, resolve_layers
from netperturb.data import dataset_info
from netperturb.pipeline import PREPARERS

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


def shard_dir(wildcards=None):
    """Folder of the decoded dataset shards."""
    return f"resources/data/{DATASET}/shards"


def model_checkpoint(wildcards):
    """Checkpoint of a configured model (trained here)."""
    return f"{RESULTS}/models/{wildcards.model}.pt"


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
