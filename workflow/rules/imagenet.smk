# The paper track's inputs: torchvision weights and the ImageNet validation set as shards.


# Fetch one torchvision weights file from its official URL (or a configured mirror) and check
# its sha256 prefix; a local rule, as compute nodes often have no internet.
rule download_weights:
    output:
        weights="resources/weights/{weights_file}",
    params:
        url=lambda wildcards: WEIGHT_DOWNLOADS[wildcards.weights_file]["url"],
        sha256_prefix=lambda wildcards: WEIGHT_DOWNLOADS[wildcards.weights_file]["sha256_prefix"],
    log:
        "logs/weights/{weights_file}.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/download_weights.py"


# Decode the validation images once with one weights' resize + centre crop into uint8 shards.
rule prepare_imagenet:
    input:
        unpack(imagenet_archives),
    output:
        shards=directory("resources/data/imagenet/{variant}/shards"),
    params:
        # what decides the shards' content; the script reads the paths and the other
        # datasets.imagenet options from the config (moving the archives reruns nothing)
        transform=lambda wildcards: IMAGENET_TRANSFORMS[wildcards.variant],
        images_per_class=config["datasets"].get("imagenet", {}).get("images_per_class"),
        shard_size=config["datasets"].get("imagenet", {}).get("shard_size"),
    threads: config["datasets"].get("imagenet", {}).get("threads", 8)
    resources:
        mem_mb=config["datasets"].get("imagenet", {}).get("mem_mb", 16000),
        runtime=config["datasets"].get("imagenet", {}).get("runtime", 180),
    log:
        "logs/prepare/imagenet-{variant}.log",
    benchmark:
        "benchmarks/prepare/imagenet-{variant}.tsv"
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/prepare_imagenet.py"
