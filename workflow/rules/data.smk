# Datasets decoded once into uint8 shards + manifest (netperturb.data).


# Decode scikit-learn's bundled digits into train/test shards with a seeded stratified split.
rule prepare_digits:
    output:
        shards=directory("resources/data/digits/shards"),
    params:
        options=lambda wildcards: {
            k: config["dataset"][k] for k in ("test_fraction", "split_seed")
        },
    log:
        "logs/prepare/digits.log",
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/prepare_dataset.py"
