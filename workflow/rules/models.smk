# Models trained here, and the clean (unperturbed) evaluation of every model.


# Train one configured model on the training split; checkpoint + per-epoch test accuracy.
rule train:
    input:
        shards=shard_dir(),
    output:
        checkpoint=f"{RESULTS}/models/{{model}}.pt",
        history=f"{RESULTS}/models/{{model}}.csv",
    params:
        arch=lambda wildcards: config["models"][wildcards.model]["arch"],
        train=lambda wildcards: config["models"][wildcards.model].get("train", {}),
        input_size=lambda wildcards: config["models"][wildcards.model].get("input_size"),
        study=STUDY,
        device=config["device"],
    threads: 2
    log:
        f"logs/{STUDY}/train/{{model}}.log",
    benchmark:
        f"benchmarks/{STUDY}/train/{{model}}.tsv"
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/train.py"


# Evaluate the unperturbed model on the evaluation split (the reference for every level 0).
rule baseline:
    input:
        checkpoint=model_checkpoint,
        shards=shard_dir,
    output:
        f"{RESULTS}/baseline/{{model}}.csv",
    params:
        source=model_source,
        study=STUDY,
        dataset=DATASET,
        seed=config["seed"],
        split=DATA_INFO["eval_split"],
        batch_size=config["perturbation"]["batch_size"],
        device=config["device"],
    resources:
        **JOB_RESOURCES,
    log:
        f"logs/{STUDY}/baseline/{{model}}.log",
    conda:
        GPU_CONDA_ENV
    script:
        "../scripts/baseline.py"
