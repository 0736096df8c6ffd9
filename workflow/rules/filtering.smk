# The Pravin et al. 2024 synaptic filtering study (config: synaptic_filtering): train with
# checkpoints -> unfiltered baselines -> per-layer and whole-network filter sweeps -> merge +
# filtering scores -> selective retraining -> merge -> report.


include: "filtering_common.smk"


if "pravin2024" in config["studies"]:
    TARGETS += [
        f"{SF_DIR}/sweeps.csv",
        f"{SF_DIR}/scores.csv",
        f"{SF_DIR}/retraining.csv",
        f"{RESULTS}/report/pravin2024.html",
    ]


# Train one model from one initialisation, keeping a checkpoint every k epochs (one rule per
# model: the checkpoint epochs depend on the model's training epochs).
_SAFE = {m: re.sub(r"\W", "_", m) for m in SF_CKPTS}  # model name -> valid rule name
for _model, _epochs in SF_CKPTS.items():

    rule:
        name:
            f"filtering_train_{_SAFE[_model]}"
        input:
            shards=sf_shards(),
        output:
            checkpoints=[f"{SF_DIR}/models/{_model}/init{{init}}/epoch{e}.pt" for e in _epochs],
            history=f"{SF_DIR}/models/{_model}/init{{init}}/history.csv",
        params:
            model=_model,
            arch=SF["models"][_model]["arch"],
            train=SF["models"][_model].get("train", {}),
            input_size=SF["models"][_model].get("input_size"),
            epochs=_epochs,
            study=STUDY,
            device=config["device"],
        threads: 2
        resources:
            **SF_RESOURCES,
        log:
            f"logs/{STUDY}/pravin2024/train/{_model}/init{{init}}.log",
        benchmark:
            f"benchmarks/{STUDY}/pravin2024/train/{_model}/init{{init}}.tsv"
        conda:
            "../../envs/netperturb.yaml"
        script:
            "../scripts/filtering_train.py"


# Clean and adversarial accuracy of every unfiltered checkpoint (the scores' baselines).
rule filtering_baseline:
    input:
        checkpoints=lambda wildcards: list(sf_checkpoints_of(wildcards.fmodel, wildcards.init).values()),
        shards=sf_shards(),
    output:
        f"{SF_DIR}/baseline/{{fmodel}}/init{{init}}.csv",
    params:
        epochs=lambda wildcards: SF_CKPTS[wildcards.fmodel],
        eps=lambda wildcards: sf_eps(wildcards.fmodel),
        **SF_COMMON,
    threads: 1
    resources:
        **SF_RESOURCES,
    log:
        f"logs/{STUDY}/pravin2024/baseline/{{fmodel}}/init{{init}}.log",
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/filtering_baseline.py"


# Per-layer mode: every filter swept over each layer's weight range, clean and adversarial,
# for one part of the layers (synaptic_filtering.layers_per_job; default all in one job).
rule filtering_sweep_layers:
    input:
        checkpoint=sf_checkpoint,
        shards=sf_shards(),
    output:
        f"{SF_DIR}/runs/{{fmodel}}/init{{init}}/epoch{{epoch}}/layers_{{part}}.csv",
    params:
        layers=lambda wildcards: SF_PARTS[wildcards.fmodel][wildcards.part],
        reuse_prefix=SF["reuse_prefix"],
        filters=SF["filters"],
        steps=SF["steps"],
        eps=lambda wildcards: sf_eps(wildcards.fmodel),
        **SF_COMMON,
    threads: 1
    resources:
        **SF_RESOURCES,
    log:
        f"logs/{STUDY}/pravin2024/sweep/{{fmodel}}/init{{init}}/epoch{{epoch}}/layers_{{part}}.log",
    benchmark:
        f"benchmarks/{STUDY}/pravin2024/sweep/{{fmodel}}/init{{init}}/epoch{{epoch}}/layers_{{part}}.tsv"
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/filtering_sweep.py"


# Whole-network mode: every layer filtered at once at each threshold of a shared grid.
rule filtering_sweep_network:
    input:
        checkpoint=sf_checkpoint,
        shards=sf_shards(),
    output:
        f"{SF_DIR}/runs/{{fmodel}}/init{{init}}/epoch{{epoch}}/network.csv",
    params:
        filters=SF["filters"],
        steps=SF["steps"],
        layers=SF["layers"],
        grid=None if SF["network_grid"] == "auto" else SF["network_grid"],
        eps=lambda wildcards: sf_eps(wildcards.fmodel),
        **SF_COMMON,
    threads: 1
    resources:
        **SF_RESOURCES,
    log:
        f"logs/{STUDY}/pravin2024/sweep/{{fmodel}}/init{{init}}/epoch{{epoch}}/network.log",
    benchmark:
        f"benchmarks/{STUDY}/pravin2024/sweep/{{fmodel}}/init{{init}}/epoch{{epoch}}/network.tsv"
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/filtering_sweep.py"


# Concatenate sweeps and baselines; the three filtering scores and classes of every curve.
rule filtering_scores:
    input:
        sweeps=sf_sweep_tables(),
        baselines=sf_baseline_tables(),
    output:
        sweeps=f"{SF_DIR}/sweeps.csv",
        parquet=f"{SF_DIR}/sweeps.parquet",
        baseline=f"{SF_DIR}/baseline.csv",
        scores=f"{SF_DIR}/scores.csv",
    params:
        tolerance=SF["tolerance"],
        metric=SF["metric"],
    log:
        f"logs/{STUDY}/pravin2024/scores.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/filtering_scores.py"


# Selective retraining of the robust and antifragile layers, against none and full retraining.
rule filtering_retrain:
    input:
        checkpoint=lambda wildcards: sf_checkpoints_of(wildcards.fmodel, wildcards.init)[
            SF_RETRAIN_AT[wildcards.fmodel]
        ],
        scores=f"{SF_DIR}/scores.csv",
        shards=sf_shards(),
    output:
        f"{SF_DIR}/retraining/{{fmodel}}/init{{init}}.csv",
    params:
        epoch=lambda wildcards: SF_RETRAIN_AT[wildcards.fmodel],
        train=lambda wildcards: SF["models"][wildcards.fmodel].get("train", {}),
        retraining=SF["retraining"],
        tolerance=SF["tolerance"],
        eps=lambda wildcards: sf_eps(wildcards.fmodel),
        **SF_COMMON,
    threads: 2
    resources:
        **SF_RESOURCES,
    log:
        f"logs/{STUDY}/pravin2024/retrain/{{fmodel}}/init{{init}}.log",
    benchmark:
        f"benchmarks/{STUDY}/pravin2024/retrain/{{fmodel}}/init{{init}}.tsv"
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/filtering_retrain.py"


# Concatenate the retraining tables and the training histories.
rule filtering_merge_retraining:
    input:
        retraining=sf_retrain_tables(),
        histories=[
            f"{SF_DIR}/models/{m}/init{i}/history.csv" for m in SF["models"] for i in SF["seeds"]
        ],
    output:
        retraining=f"{SF_DIR}/retraining.csv",
        histories=f"{SF_DIR}/training.csv",
    log:
        f"logs/{STUDY}/pravin2024/merge_retraining.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/filtering_merge.py"


# The Pravin et al. 2024 report: accuracy against alpha, score heat maps, classes, retraining.
rule report_pravin:
    input:
        sweeps=f"{SF_DIR}/sweeps.csv",
        baseline=f"{SF_DIR}/baseline.csv",
        scores=f"{SF_DIR}/scores.csv",
        retraining=f"{SF_DIR}/retraining.csv",
        training=f"{SF_DIR}/training.csv",
        notebook=workflow.source_path("../../notebooks/pravin2024.ipynb"),
    output:
        notebook=f"{RESULTS}/report/pravin2024.ipynb",
        html=report(
            f"{RESULTS}/report/pravin2024.html",
            category="Pravin et al. 2024",
            caption="../report/pravin2024.rst",
        ),
        figures=report(
            directory(f"{RESULTS}/report/figures/pravin2024"),
            patterns=["{name}.png"],
            category="Pravin et al. 2024",
            caption="../report/pravin2024_figure.rst",
        ),
        tables=directory(f"{RESULTS}/report/tables/pravin2024"),
    params:
        study=STUDY,
        dataset=SF_DATASET,
        num_classes=SF_INFO["num_classes"],
        tolerance=SF["tolerance"],
        metric=SF["metric"],
    log:
        f"logs/{STUDY}/pravin2024/report.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/render_report.py"
