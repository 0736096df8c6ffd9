# The Cheney et al. 2017 grid (config section `cheney2017`): the clean baseline of every model,
# one job per model x perturbation x part of its layers (cheney2017.layers_per_job; all levels x
# repeats inside), one tidy table, the report. Plan: netperturb.studies.cheney2017.plan; jobs: netperturb.studies.cheney2017.jobs.

CHENEY = config["cheney2017"]
CHENEY_DIR = study_dir("cheney2017")
CHENEY_PLAN = PLANS["cheney2017"]  # netperturb.studies.cheney2017.plan.plan_grid, checked in common.smk

# What a baseline / perturbation job asks of the executor (cheney2017.resources): gpu=1 puts
# them on GPU nodes under SLURM; runtime x attempt on a retry.
CHENEY_RESOURCES = job_resources(CHENEY["resources"])
# every job's netperturb.core.context.RunContext (model, source, data, seed, batch size, device)
CHENEY_CONTEXT = job_context(CHENEY["batch_size"])


if "cheney2017" in config["studies"]:
    TARGETS += [
        f"{CHENEY_DIR}/perturbation.csv",
        f"{CHENEY_DIR}/perturbation.parquet",
        f"{CHENEY_DIR}/report/cheney2017.html",
    ]


# Evaluate the unperturbed model on the evaluation split (the reference for every level 0).
rule cheney2017_baseline:
    input:
        checkpoint=model_checkpoint,
        shards=shard_dir,
    output:
        f"{CHENEY_DIR}/baseline/{{model}}.csv",
    params:
        context=CHENEY_CONTEXT,
    resources:
        **CHENEY_RESOURCES,
    priority: 25  # small jobs that finish a study: run them as soon as they can
    log:
        f"logs/{RUN}/cheney2017/baseline/{{model}}.log",
    conda:
        conda_env(CHENEY["resources"])
    script:
        "../scripts/cheney2017/baseline.py"


# All levels x repeats of one perturbation on each layer of one part of one model's layers
# (cheney2017.layers_per_job; default: all of them in one job).
rule cheney2017_perturb:
    input:
        checkpoint=model_checkpoint,
        shards=shard_dir,
    output:
        f"{CHENEY_DIR}/runs/{{model}}/{{perturbation}}/layers_{{part}}.csv",
    wildcard_constraints:
        perturbation="|".join(CHENEY["perturbations"]),
        part=r"\d+of\d+",
    params:
        context=CHENEY_CONTEXT,
        layers=lambda wildcards: CHENEY_PLAN.parts[wildcards.model][wildcards.part],
        options=lambda wildcards: CHENEY["perturbations"][wildcards.perturbation],
        repeats=CHENEY["repeats"],
        focus=lambda wildcards: CHENEY_PLAN.focus.get(wildcards.perturbation),
        engine=CHENEY["engine"],
        precision=CHENEY["precision"],
        max_replicas=CHENEY["max_replicas"],
    threads: 1
    resources:
        **CHENEY_RESOURCES,
    log:
        f"logs/{RUN}/cheney2017/perturb/{{model}}/{{perturbation}}/layers_{{part}}.log",
    benchmark:
        f"benchmarks/{RUN}/cheney2017/perturb/{{model}}/{{perturbation}}/layers_{{part}}.tsv"
    conda:
        conda_env(CHENEY["resources"])
    script:
        "../scripts/cheney2017/perturb.py"


# Check the per-job tables and the baselines against the plan (netperturb.core.merge), then
# concatenate them (CSV + Parquet, each with its sha256 record).
rule cheney2017_merge:
    input:
        runs=CHENEY_PLAN.job_tables(CHENEY_DIR),
        baselines=expand(rules.cheney2017_baseline.output[0], model=config["models"]),
    output:
        csv=f"{CHENEY_DIR}/perturbation.csv",
        parquet=f"{CHENEY_DIR}/perturbation.parquet",
        baseline=f"{CHENEY_DIR}/baseline.csv",
    params:
        # job table -> its [layer, level, repeat] cells: the merge checks each table against it
        planned=CHENEY_PLAN.job_cells(CHENEY_DIR, CHENEY["repeats"]),
    priority: 25
    log:
        f"logs/{RUN}/cheney2017/merge.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/cheney2017/merge.py"


# The Cheney et al. 2017 report: accuracy against level per layer, drop table, rank-sum tests.
rule cheney2017_report:
    input:
        unpack(
            merged_tables(
                perturbation=rules.cheney2017_merge.output.csv,
                baseline=rules.cheney2017_merge.output.baseline,
            )
        ),
        notebook=workflow.source_path("../../notebooks/cheney2017.ipynb"),
    output:
        **report_outputs("cheney2017", "Cheney et al. 2017"),
    params:
        run=RUN,
        num_classes=DATA_INFO["num_classes"],
        metric=CHENEY["report"]["metric"],
        drop_level=CHENEY["report"]["drop_level"],
        ranksum_level=CHENEY["report"]["ranksum_level"],
    priority: 25
    log:
        f"logs/{RUN}/cheney2017/report.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/common/render_report.py"
