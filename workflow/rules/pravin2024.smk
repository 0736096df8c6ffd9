# The Pravin et al. 2024 synaptic filtering study (config section `pravin2024`): train with
# checkpoints -> unfiltered baselines -> per-layer and whole-network filter sweeps -> merge +
# filtering scores -> selective retraining -> merge -> report.
# Plan: netperturb.studies.pravin2024.plan; jobs: netperturb.studies.pravin2024.jobs.

from netperturb.studies.pravin2024.plan import attack_eps, network_eps

PRAVIN = config["pravin2024"]
PRAVIN_DIR = study_dir("pravin2024")
PRAVIN_DATASET = PRAVIN.get("dataset") or DATASET
PRAVIN_INFO = DATA_INFO if PRAVIN_DATASET == DATASET else dataset_info(PRAVIN_DATASET)
if "pravin2024" in config["studies"] and "train" not in PRAVIN_INFO.get("splits", ("train",)):
    raise WorkflowError(
        f"invalid config: dataset: pravin2024 trains its models, and {PRAVIN_DATASET} has no training split; "
        "set pravin2024.dataset to a built-in dataset, or give the image folder train/ and test/ folders"
    )
PRAVIN_PLAN = PLANS["pravin2024"]  # netperturb.studies.pravin2024.plan.plan_study, checked in common.smk
PRAVIN_SHARDS = dataset_shards(PRAVIN.get("dataset"))
PRAVIN_RUNS = [(m, i) for m in PRAVIN["models"] for i in PRAVIN["seeds"]]  # model x initialisation
PRAVIN_CKPT = f"{PRAVIN_DIR}/models/{{fmodel}}/init{{init}}/epoch{{epoch}}.pt"



# What the train, baseline, sweep and retraining jobs ask of the executor (e.g. SLURM);
# runtime x attempt on a retry.
PRAVIN_RESOURCES = job_resources(PRAVIN["resources"])

# every job's netperturb.core.context.RunContext (its model is {fmodel}, a checkpoint of the study)
PRAVIN_CONTEXT = job_context(
    PRAVIN["batch_size"], model_wildcard="fmodel", dataset=PRAVIN_DATASET, split=PRAVIN_INFO["eval_split"]
)
PRAVIN_COMMON = dict(
    context=PRAVIN_CONTEXT,
    n_images=PRAVIN["eval_images"],
    channels_last=PRAVIN["channels_last"],
    attack=PRAVIN["attack"],
)


wildcard_constraints:
    fmodel="|".join(map(re.escape, PRAVIN["models"])),
    init=r"\d+",
    epoch=r"\d+",
    part=r"\d+of\d+",


if "pravin2024" in config["studies"]:
    TARGETS += [
        f"{PRAVIN_DIR}/sweeps.csv",
        f"{PRAVIN_DIR}/scores.csv",
        f"{PRAVIN_DIR}/retraining.csv",
        f"{PRAVIN_DIR}/report/pravin2024.html",
    ]


# Train one model from one initialisation, keeping a checkpoint every k epochs (one rule per
# model: the checkpoint epochs depend on the model's training epochs).
_SAFE = {m: re.sub(r"\W", "_", m) for m in PRAVIN_PLAN.checkpoints}  # model name -> valid rule name
for _model, _epochs in PRAVIN_PLAN.checkpoints.items():

    rule:
        name:
            f"pravin2024_train_{_SAFE[_model]}"
        input:
            shards=PRAVIN_SHARDS,
        output:
            checkpoints=[f"{PRAVIN_DIR}/models/{_model}/init{{init}}/epoch{e}.pt" for e in _epochs],
            history=f"{PRAVIN_DIR}/models/{_model}/init{{init}}/history.csv",
        params:
            context=job_context(PRAVIN["batch_size"], dataset=PRAVIN_DATASET, model=_model),
            arch=PRAVIN["models"][_model]["arch"],
            train={**PRAVIN["models"][_model].get("train", {}), "schedule": PRAVIN["schedule"]},
            input_size=PRAVIN["models"][_model].get("input_size"),
            epochs=_epochs,
        threads: 1  # see rule train: the same weights on any machine, and no 2-thread job waiting on 2 cores
        priority: 30  # the study's chain (train, sweeps, scores, retrain) is the run's longest: start it first
        resources:
            **PRAVIN_RESOURCES,
        log:
            f"logs/{RUN}/pravin2024/train/{_model}/init{{init}}.log",
        benchmark:
            f"benchmarks/{RUN}/pravin2024/train/{_model}/init{{init}}.tsv"
        conda:
            conda_env(PRAVIN["resources"])
        script:
            "../scripts/pravin2024/train.py"


# Clean and adversarial accuracy of every unfiltered checkpoint (the scores' baselines).
rule pravin2024_baseline:
    input:
        checkpoints=lambda wildcards: list(PRAVIN_PLAN.checkpoint_files(PRAVIN_DIR, wildcards.fmodel, wildcards.init).values()),
        shards=PRAVIN_SHARDS,
    output:
        f"{PRAVIN_DIR}/baseline/{{fmodel}}/init{{init}}.csv",
    params:
        epochs=lambda wildcards: PRAVIN_PLAN.checkpoints[wildcards.fmodel],
        eps=lambda wildcards: attack_eps(PRAVIN, wildcards.fmodel, PRAVIN_DATASET),
        network_eps=lambda wildcards: (
            network_eps(PRAVIN, wildcards.fmodel, PRAVIN_DATASET) if "network" in PRAVIN["modes"] else None
        ),
        **PRAVIN_COMMON,
    threads: 1
    priority: 30
    resources:
        **PRAVIN_RESOURCES,
    log:
        f"logs/{RUN}/pravin2024/baseline/{{fmodel}}/init{{init}}.log",
    conda:
        conda_env(PRAVIN["resources"])
    script:
        "../scripts/pravin2024/baseline.py"


# Per-layer mode: every filter swept over each layer's weight range, clean and adversarial,
# for one part of the layers (pravin2024.layers_per_job; default all in one job).
rule pravin2024_sweep_layers:
    input:
        checkpoint=PRAVIN_CKPT,
        shards=PRAVIN_SHARDS,
    output:
        f"{PRAVIN_DIR}/runs/{{fmodel}}/init{{init}}/epoch{{epoch}}/layers_{{part}}.csv",
    params:
        layers=lambda wildcards: PRAVIN_PLAN.parts[wildcards.fmodel][wildcards.part],
        reuse_prefix=PRAVIN["reuse_prefix"],
        max_replicas=PRAVIN["max_replicas"],
        filters=PRAVIN["filters"],
        steps=PRAVIN["steps"],
        pulse_steps=PRAVIN["pulse_steps"],
        eps=lambda wildcards: attack_eps(PRAVIN, wildcards.fmodel, PRAVIN_DATASET),
        **PRAVIN_COMMON,
    threads: 1
    priority: 30
    resources:
        **PRAVIN_RESOURCES,
    log:
        f"logs/{RUN}/pravin2024/sweep/{{fmodel}}/init{{init}}/epoch{{epoch}}/layers_{{part}}.log",
    benchmark:
        f"benchmarks/{RUN}/pravin2024/sweep/{{fmodel}}/init{{init}}/epoch{{epoch}}/layers_{{part}}.tsv"
    conda:
        conda_env(PRAVIN["resources"])
    script:
        "../scripts/pravin2024/sweep.py"


# Whole-network mode: every layer filtered at once at each threshold of a shared grid.
rule pravin2024_sweep_network:
    input:
        checkpoint=PRAVIN_CKPT,
        shards=PRAVIN_SHARDS,
    output:
        f"{PRAVIN_DIR}/runs/{{fmodel}}/init{{init}}/epoch{{epoch}}/network.csv",
    params:
        filters=PRAVIN["filters"],
        steps=PRAVIN["steps"],
        pulse_steps=PRAVIN["pulse_steps"],
        layers=PRAVIN["layers"],
        grid=None if PRAVIN["network_grid"] == "auto" else PRAVIN["network_grid"],
        eps=lambda wildcards: network_eps(PRAVIN, wildcards.fmodel, PRAVIN_DATASET),
        **PRAVIN_COMMON,
    threads: 1
    priority: 30
    resources:
        **PRAVIN_RESOURCES,
    log:
        f"logs/{RUN}/pravin2024/sweep/{{fmodel}}/init{{init}}/epoch{{epoch}}/network.log",
    benchmark:
        f"benchmarks/{RUN}/pravin2024/sweep/{{fmodel}}/init{{init}}/epoch{{epoch}}/network.tsv"
    conda:
        conda_env(PRAVIN["resources"])
    script:
        "../scripts/pravin2024/sweep.py"


# Concatenate sweeps and baselines; the three filtering scores and classes of every curve.
rule pravin2024_scores:
    input:
        sweeps=PRAVIN_PLAN.sweep_tables(PRAVIN_DIR, PRAVIN["seeds"], PRAVIN["modes"]),
        baselines=[f"{PRAVIN_DIR}/baseline/{m}/init{i}.csv" for m, i in PRAVIN_RUNS],
    output:
        sweeps=f"{PRAVIN_DIR}/sweeps.csv",
        parquet=f"{PRAVIN_DIR}/sweeps.parquet",
        baseline=f"{PRAVIN_DIR}/baseline.csv",
        scores=f"{PRAVIN_DIR}/scores.csv",
    params:
        tolerance=PRAVIN["tolerance"],
        metric=PRAVIN["metric"],
        score=PRAVIN["score"],
        seed=config["seed"],
    priority: 25
    log:
        f"logs/{RUN}/pravin2024/scores.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/pravin2024/scores.py"


# Selective retraining of the robust and antifragile layers, against none and full retraining.
rule pravin2024_retrain:
    input:
        unpack(merged_tables(scores=rules.pravin2024_scores.output.scores)),
        checkpoint=lambda wildcards: PRAVIN_PLAN.checkpoint_files(PRAVIN_DIR, wildcards.fmodel, wildcards.init)[
            PRAVIN_PLAN.retrain_at[wildcards.fmodel]
        ],
        shards=PRAVIN_SHARDS,
    output:
        f"{PRAVIN_DIR}/retraining/{{fmodel}}/init{{init}}.csv",
    params:
        epoch=lambda wildcards: PRAVIN_PLAN.retrain_at[wildcards.fmodel],
        train=lambda wildcards: {**PRAVIN["models"][wildcards.fmodel].get("train", {}), "schedule": PRAVIN["schedule"]},
        retraining=PRAVIN["retraining"],
        tolerance=PRAVIN["tolerance"],
        eps=lambda wildcards: attack_eps(PRAVIN, wildcards.fmodel, PRAVIN_DATASET),
        **PRAVIN_COMMON,
    threads: 1  # see rule train
    priority: 30
    resources:
        **PRAVIN_RESOURCES,
    log:
        f"logs/{RUN}/pravin2024/retrain/{{fmodel}}/init{{init}}.log",
    benchmark:
        f"benchmarks/{RUN}/pravin2024/retrain/{{fmodel}}/init{{init}}.tsv"
    conda:
        conda_env(PRAVIN["resources"])
    script:
        "../scripts/pravin2024/retrain.py"


# Concatenate the retraining tables and the training histories.
rule pravin2024_merge_retraining:
    input:
        retraining=[f"{PRAVIN_DIR}/retraining/{m}/init{i}.csv" for m, i in PRAVIN_RUNS],
        histories=[f"{PRAVIN_DIR}/models/{m}/init{i}/history.csv" for m, i in PRAVIN_RUNS],
    output:
        retraining=f"{PRAVIN_DIR}/retraining.csv",
        histories=f"{PRAVIN_DIR}/training.csv",
    priority: 25
    log:
        f"logs/{RUN}/pravin2024/merge_retraining.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/pravin2024/merge.py"


# The Pravin et al. 2024 report: accuracy against alpha, score heat maps, classes, retraining.
rule pravin2024_report:
    input:
        unpack(
            merged_tables(
                sweeps=rules.pravin2024_scores.output.sweeps,
                baseline=rules.pravin2024_scores.output.baseline,
                scores=rules.pravin2024_scores.output.scores,
                retraining=rules.pravin2024_merge_retraining.output.retraining,
                training=rules.pravin2024_merge_retraining.output.histories,
            )
        ),
        notebook=workflow.source_path("../../notebooks/pravin2024.ipynb"),
    output:
        **report_outputs("pravin2024", "Pravin et al. 2024"),
    params:
        run=RUN,
        dataset=PRAVIN_DATASET,
        num_classes=PRAVIN_INFO["num_classes"],
        tolerance=PRAVIN["tolerance"],
        metric=PRAVIN["metric"],
        score_normalise=PRAVIN["score"]["normalise"],
        score_baseline=PRAVIN["score"]["baseline"],
        score_n_boot=PRAVIN["score"]["n_boot"],
        score_ci=PRAVIN["score"]["ci"],
        seed=config["seed"],
    priority: 25
    log:
        f"logs/{RUN}/pravin2024/report.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/common/render_report.py"
