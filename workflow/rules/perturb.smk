# The Cheney et al. 2017 grid: one job per model x layer x perturbation, then one tidy table.


# All levels x repeats of one perturbation on one layer of one model.
rule perturb:
    input:
        checkpoint=model_checkpoint,
        shards=shard_dir,
    output:
        f"{RESULTS}/runs/{{model}}/{{perturbation}}/{{layer}}.csv",
    params:
        source=model_source,
        study=STUDY,
        dataset=DATASET,
        seed=config["seed"],
        split=DATA_INFO["eval_split"],
        options=lambda wildcards: config["perturbation"]["perturbations"][
            wildcards.perturbation
        ],
        repeats=config["perturbation"]["repeats"],
        batch_size=config["perturbation"]["batch_size"],
        device=config["device"],
        engine=config["perturbation"]["engine"],
        precision=config["perturbation"]["precision"],
        max_replicas=config["perturbation"]["max_replicas"],
    threads: 1
    resources:
        **JOB_RESOURCES,
    log:
        f"logs/{STUDY}/perturb/{{model}}/{{perturbation}}/{{layer}}.log",
    benchmark:
        f"benchmarks/{STUDY}/perturb/{{model}}/{{perturbation}}/{{layer}}.tsv"
    conda:
        GPU_CONDA_ENV
    script:
        "../scripts/perturb.py"


# Concatenate the per-job tables (CSV + Parquet) and the baselines.
rule merge:
    input:
        runs=perturbation_tables(),
        baselines=baseline_tables(),
    output:
        csv=f"{RESULTS}/perturbation.csv",
        parquet=f"{RESULTS}/perturbation.parquet",
        baseline=f"{RESULTS}/baseline.csv",
    log:
        f"logs/{STUDY}/merge.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/merge.py"
