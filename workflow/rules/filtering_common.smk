# Set-up of the Pravin et al. 2024 study (rules in filtering.smk): resolve and check the
# synaptic_filtering config, checkpoint epochs, layers; input functions and path lists.

from netperturb.studies.pravin2024.plan import checkpoint_epochs

SF = config["synaptic_filtering"]
SF_DIR = f"{RESULTS}/pravin2024"
SF_DATASET = SF.get("dataset") or DATASET
SF_INFO = dataset_info(SF_DATASET)


def _sf_check():
    """Config values the schema cannot check; errors name the key."""
    epochs = {m: int(o.get("train", {}).get("epochs", 30)) for m, o in SF["models"].items()}
    ckpts = {m: checkpoint_epochs(e, SF["checkpoint_every"]) for m, e in epochs.items()}
    layers = {
        m: resolve_layers(
            m,
            o,
            SF["layers"],
            num_classes=SF_INFO["num_classes"],
            in_channels=SF_INFO["in_channels"],
            key="synaptic_filtering.layers",
        )
        for m, o in SF["models"].items()
    }
    retrain_at = {}
    for m in SF["models"]:
        at = SF["retraining"]["checkpoint"] or ckpts[m][-1]
        if at not in ckpts[m]:
            raise ConfigError(
                f"synaptic_filtering.retraining.checkpoint: epoch {at} is not a checkpoint of "
                f"model {m!r} (checkpoints: {ckpts[m]})"
            )
        retrain_at[m] = at
    grid = SF["network_grid"]
    if grid != "auto" and grid[1] <= grid[0]:
        raise ConfigError(f"synaptic_filtering.network_grid: need lo < hi, got {grid}")
    return ckpts, layers, retrain_at


try:
    SF_CKPTS, SF_LAYERS, SF_RETRAIN_AT = _sf_check()
except ConfigError as e:
    raise WorkflowError(f"invalid config: {e}")


def _sf_parts(layers):
    """Per-layer sweeps of one checkpoint in jobs of layers_per_job layers (depth order):
    part name ("<k>of<n>") -> module paths."""
    size = SF["layers_per_job"] or len(layers)
    chunks = [layers[i : i + size] for i in range(0, len(layers), size)]
    return {f"{k + 1}of{len(chunks)}": [l.path for l in c] for k, c in enumerate(chunks)}


SF_PARTS = {m: _sf_parts(layers) for m, layers in SF_LAYERS.items()}


def sf_eps(model):
    """Attack budget of a model: its own eps, else the dataset's."""
    return SF["models"][model].get("eps", SF["attack"]["eps"][SF_DATASET])


def sf_shards(wildcards=None):
    return f"resources/data/{SF_DATASET}/shards"


def sf_checkpoint(wildcards):
    return f"{SF_DIR}/models/{wildcards.fmodel}/init{wildcards.init}/epoch{wildcards.epoch}.pt"


def sf_checkpoints_of(model, init):
    return {e: f"{SF_DIR}/models/{model}/init{init}/epoch{e}.pt" for e in SF_CKPTS[model]}


def sf_sweep_tables():
    out = []
    for m in SF["models"]:
        for i in SF["seeds"]:
            for e in SF_CKPTS[m]:
                run = f"{SF_DIR}/runs/{m}/init{i}/epoch{e}"
                if "layer" in SF["modes"]:
                    out += [f"{run}/layers_{part}.csv" for part in SF_PARTS[m]]
                if "network" in SF["modes"]:
                    out.append(f"{run}/network.csv")
    return out


def sf_baseline_tables():
    return [f"{SF_DIR}/baseline/{m}/init{i}.csv" for m in SF["models"] for i in SF["seeds"]]


def sf_retrain_tables():
    return [f"{SF_DIR}/retraining/{m}/init{i}.csv" for m in SF["models"] for i in SF["seeds"]]


# What the train, baseline, sweep and retraining jobs ask of the executor (e.g. SLURM).
SF_RESOURCES = {k: SF["resources"][k] for k in ("gpu", "mem_mb", "runtime")}

SF_COMMON = dict(
    study=STUDY,
    dataset=SF_DATASET,
    seed=config["seed"],
    split=SF_INFO["eval_split"],
    n_images=SF["eval_images"],
    batch_size=SF["batch_size"],
    channels_last=SF["channels_last"],
    attack=SF["attack"],
    device=config["device"],
)


wildcard_constraints:
    fmodel="|".join(map(re.escape, SF["models"])),
    init=r"\d+",
    epoch=r"\d+",
    part=r"\d+of\d+",
