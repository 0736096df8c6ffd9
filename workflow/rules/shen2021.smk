# The Shen et al. 2021 Min-Max study (config section `shen2021`): one network per lambda x seed
# trained with a fuzziness term while its weights are tracked, then attacked (FGSM, PGD) and
# perturbed internally (the Cheney et al. grid); merged tables and a report.
# Plan: netperturb.studies.shen2021.plan; jobs: netperturb.studies.shen2021.jobs.

SHEN = config["shen2021"]
SHEN_DATASET = SHEN.get("dataset", DATASET)  # no schema default: the top-level dataset
SHEN_INFO = DATA_INFO if SHEN_DATASET == DATASET else dataset_info(SHEN_DATASET)
SHEN_SHARDS = dataset_shards(SHEN.get("dataset"))
if "shen2021" in config["studies"] and "train" not in SHEN_INFO.get("splits", ("train",)):
    raise WorkflowError(
        f"invalid config: dataset: shen2021 trains its models, and {SHEN_DATASET} has no training split; "
        "set shen2021.dataset to a built-in dataset, or give the image folder train/ and test/ folders"
    )
# every job's netperturb.core.context.RunContext (its model is the run's own checkpoint)
SHEN_CONTEXT = job_context(SHEN["perturbation"]["batch_size"], dataset=SHEN_DATASET, split=SHEN_INFO["eval_split"])
SHEN_DIR = study_dir("shen2021")
SHEN_PLAN = PLANS["shen2021"]  # netperturb.studies.shen2021.plan.check_config, checked in common.smk
SHEN_LAMS = dict(zip(SHEN_PLAN["lams"], SHEN["lambdas"]))
SHEN_RUN = f"{SHEN_DIR}/runs/lam{{lam}}_seed{{seed}}"
SHEN_CONTROL = f"{SHEN_DIR}/runs/shuffled_seed{{seed}}"
# every lambda x seed, for expand()
SHEN_RUNS = dict(lam=SHEN_PLAN["lams"], seed=SHEN_PLAN["seeds"])
# the shuffled-label control runs, one per seed (none when shen2021.controls.shuffled_labels is off)
SHEN_CONTROLS = dict(seed=SHEN_PLAN["seeds"] if SHEN["controls"]["shuffled_labels"] else [])


if "shen2021" in config["studies"]:
    TARGETS += [
        f"{SHEN_DIR}/tracking.parquet",
        f"{SHEN_DIR}/robustness.csv",
        f"{SHEN_DIR}/perturbation.csv",
        f"{SHEN_DIR}/report/shen2021.html",
    ]


# Train one lambda x seed run with the fuzziness term; checkpoint, history, weight tracking.
rule shen2021_train:
    input:
        shards=SHEN_SHARDS,
    output:
        checkpoint=f"{SHEN_RUN}/model.pt",
        history=f"{SHEN_RUN}/history.csv",
        tracking=f"{SHEN_RUN}/tracking.parquet",
        histograms=f"{SHEN_RUN}/histograms.parquet",
    wildcard_constraints:
        lam=r"[0-9.e+-]+",
        seed=r"\d+",
    params:
        context=SHEN_CONTEXT,
        lam=lambda wildcards: SHEN_LAMS[wildcards.lam],
        options=SHEN,
        shuffle_labels=False,
    threads: 1
    # above the cheney2017 / faults perturbation jobs (0): this study's merge and report (about
    # 60 s, one after the other) then run beside them instead of alone at the end of the run
    priority: 10
    log:
        f"logs/{RUN}/shen2021/train/lam{{lam}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{RUN}/shen2021/train/lam{{lam}}_seed{{seed}}.tsv"
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/shen2021/train.py"


# The shuffled-label control of one seed: lambda 0, the training labels permuted, tracked the same way.
rule shen2021_control:
    input:
        shards=SHEN_SHARDS,
    output:
        checkpoint=f"{SHEN_CONTROL}/model.pt",
        history=f"{SHEN_CONTROL}/history.csv",
        tracking=f"{SHEN_CONTROL}/tracking.parquet",
        histograms=f"{SHEN_CONTROL}/histograms.parquet",
    wildcard_constraints:
        seed=r"\d+",
    params:
        context=SHEN_CONTEXT,
        lam=0.0,
        options=SHEN,
        shuffle_labels=True,
    threads: 1
    priority: 10
    log:
        f"logs/{RUN}/shen2021/control/shuffled_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{RUN}/shen2021/control/shuffled_seed{{seed}}.tsv"
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/shen2021/train.py"


# Everything measured on one run's model: FGSM and PGD accuracy against eps, then the internal
# perturbation grid (every layer x perturbation x level x repeat); one job per run.
rule shen2021_evaluate:
    input:
        checkpoint=rules.shen2021_train.output.checkpoint,
        shards=SHEN_SHARDS,
    output:
        robustness=f"{SHEN_RUN}/robustness.csv",
        perturbation=f"{SHEN_RUN}/perturbation.csv",
    wildcard_constraints:
        lam=r"[0-9.e+-]+",
        seed=r"\d+",
    params:
        context=SHEN_CONTEXT,
        lam=lambda wildcards: SHEN_LAMS[wildcards.lam],
        attacks=SHEN["attacks"],
        perturbation=SHEN["perturbation"],
    threads: 1
    priority: 10
    log:
        f"logs/{RUN}/shen2021/evaluate/lam{{lam}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{RUN}/shen2021/evaluate/lam{{lam}}_seed{{seed}}.tsv"
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/shen2021/evaluate.py"


# Concatenate the per-run tables of every kind (CSV; Parquet for the large ones).
rule shen2021_merge:
    input:
        history=expand(rules.shen2021_train.output.history, **SHEN_RUNS),
        tracking=expand(rules.shen2021_train.output.tracking, **SHEN_RUNS)
        + expand(rules.shen2021_control.output.tracking, **SHEN_CONTROLS),
        histograms=expand(rules.shen2021_train.output.histograms, **SHEN_RUNS)
        + expand(rules.shen2021_control.output.histograms, **SHEN_CONTROLS),
        control_history=expand(rules.shen2021_control.output.history, **SHEN_CONTROLS),
        robustness=expand(rules.shen2021_evaluate.output.robustness, **SHEN_RUNS),
        perturbation=expand(rules.shen2021_evaluate.output.perturbation, **SHEN_RUNS),
    output:
        history=f"{SHEN_DIR}/history.csv",
        control_history=f"{SHEN_DIR}/control_history.csv",
        # the two large tables (about 680,000 and 200,000 rows in the default run) as Parquet only
        tracking=f"{SHEN_DIR}/tracking.parquet",
        histograms=f"{SHEN_DIR}/histograms.parquet",
        robustness=f"{SHEN_DIR}/robustness.csv",
        perturbation=f"{SHEN_DIR}/perturbation.csv",
    priority: 25
    log:
        f"logs/{RUN}/shen2021/merge.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/shen2021/merge.py"


# The Shen et al. 2021 report: interval histograms and fuzziness over training, robustness.
rule shen2021_report:
    input:
        unpack(
            merged_tables(
                history=rules.shen2021_merge.output.history,
                control_history=rules.shen2021_merge.output.control_history,
                tracking=rules.shen2021_merge.output.tracking,
                histograms=rules.shen2021_merge.output.histograms,
                robustness=rules.shen2021_merge.output.robustness,
                perturbation=rules.shen2021_merge.output.perturbation,
            )
        ),
        notebook=workflow.source_path("../../notebooks/shen2021.ipynb"),
    output:
        **report_outputs("shen2021", "Shen et al. 2021"),
    params:
        run=RUN,
        dataset=SHEN_DATASET,
        num_classes=SHEN_INFO["num_classes"],
        report_eps=SHEN["attacks"]["report_eps"],
        end_fraction=SHEN["end_fraction"],
        regularized=SHEN["regularizer"]["layers"],
    priority: 25
    log:
        f"logs/{RUN}/shen2021/report.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/common/render_report.py"
