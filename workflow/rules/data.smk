# Datasets decoded once into uint8 shards + manifest (netperturb.data).


# Decode a dataset (digits: scikit-learn's bundled copy; mnist: the official idx files).
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
        "../scripts/prepare_dataset.py"
