# The inputs every study shares: datasets decoded once into uint8 shards + manifest
# (netperturb.datasets), torchvision weights, and the models trained here (config `models`).

IMAGENET = config["datasets"]["imagenet"]  # the schema fills in every option's default


# Decode a dataset (digits: scikit-learn's bundled copy; mnist, cifar10, tiny_imagenet: the
# official files under datasets.<name>.root).
rule prepare_dataset:
    output:
        shards=directory("resources/data/{dataset}/shards"),
    params:
        options=lambda wildcards: config["datasets"].get(wildcards.dataset, {}),
    log:
        "logs/prepare/{dataset}.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/data/prepare_dataset.py"


# Decode the config's own images once into uint8 shards + manifest (value range, channels, size):
# `dataset: {kind: image_folder, root, ...}` or `{kind: tensors, path}` (netperturb.datasets.sources).
# The shards' folder name carries a digest of the settings, the params a fingerprint of the
# files: another transform, or a changed image, makes them again.
rule prepare_data_source:
    input:
        DATA.inputs,
    output:
        shards=directory("resources/data/{data_source}/shards"),
    params:
        spec=DATA.spec,
    threads: int(config["dataset"].get("threads", 1)) if DATA.spec else 1
    log:
        "logs/prepare/{data_source}.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/data/prepare_data_source.py"


# Fetch one torchvision weights file from its official URL (or a configured mirror) and check
# its sha256 prefix; a local rule, as compute nodes often have no internet.
rule download_weights:
    output:
        weights="resources/weights/{weights_file}",
    params:
        url=lambda wildcards: SOURCES.weight_downloads[wildcards.weights_file]["url"],
        sha256_prefix=lambda wildcards: SOURCES.weight_downloads[wildcards.weights_file][
            "sha256_prefix"
        ],
    log:
        "logs/weights/{weights_file}.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/data/download_weights.py"


# Decode the validation images once with one weights' resize + centre crop into uint8 shards.
rule prepare_imagenet:
    input:
        unpack(imagenet_archives),
    output:
        shards=directory("resources/data/imagenet/{variant}/shards"),
    params:
        # what decides the shards' content; the script reads the paths and the other
        # datasets.imagenet options from the config (moving the archives reruns nothing)
        transform=lambda wildcards: SOURCES.imagenet_variants[wildcards.variant],
        images_per_class=IMAGENET["images_per_class"],
        shard_size=IMAGENET["shard_size"],
    threads: IMAGENET["threads"]
    resources:
        **job_resources(IMAGENET),
    log:
        "logs/prepare/imagenet-{variant}.log",
    benchmark:
        "benchmarks/prepare/imagenet-{variant}.tsv"
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/data/prepare_imagenet.py"


# Train one configured model (config `models`, source netperturb without `file`) on the training
# split; checkpoint + per-epoch test accuracy, in results/<run>/models/ for every study to use. A
# model given as a file (torchvision, timm, python, torchscript, exported) is never trained.
# Its priority starts it before the independent jobs: most of the run's jobs wait for it.
rule train:
    wildcard_constraints:
        model="|".join(map(re.escape, SOURCES.trained_here())) or "(?!)",
    input:
        shards=shard_dir(),
    output:
        checkpoint=f"{RESULTS}/models/{{model}}.pt",
        history=f"{RESULTS}/models/{{model}}.csv",
    params:
        arch=lambda wildcards: config["models"][wildcards.model]["arch"],
        train=lambda wildcards: config["models"][wildcards.model].get("train", {}),
        input_size=lambda wildcards: config["models"][wildcards.model].get("input_size"),
        run=RUN,
        device=config["device"],
    # 1 thread, as every job, on any machine: (1) the thread count changes the trained weights
    # bit-wise (torch sums in another order), so a fixed count gives the same models whatever
    # --cores or the executor (with threads 2, --cores 1 trained other weights); (2) Snakemake
    # starts the ready jobs of highest summed priority, so on 2 cores a 2-thread job waited until
    # no 1-thread job was ready (in the default run these trainings started 13 and 17 minutes
    # in, leaving every cheney2017 / faults job for the end). --set-threads train=N trains
    # faster on a big machine, and other weights.
    threads: 1
    priority: 40  # above pravin2024's chain (30): most of the run's jobs wait for these models
    log:
        f"logs/{RUN}/train/{{model}}.log",
    benchmark:
        f"benchmarks/{RUN}/train/{{model}}.tsv"
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/data/train.py"
