# The hardware-fault study (config section `faults`): the fault-free reference network of every
# model in every format the variants need (fp32, int8, ...), one job per model x fault variant x
# part of its layers (faults.layers_per_job; all levels x repeats inside), one tidy table, the report.
# Plan and config checks: netperturb.studies.faults.plan; jobs: netperturb.studies.faults.jobs.

FAULTS = config["faults"]
FAULTS_DIR = study_dir("faults")
# netperturb.studies.faults.plan.plan_faults, checked in common.smk: bad fault options
# (format: int4, bits: [40] for fp32, a rate above 1, ...) stop the run there
FAULTS_PLAN = PLANS["faults"]

FAULTS_RESOURCES = {k: FAULTS["resources"][k] for k in ("gpu", "mem_mb", "runtime")}
# every job's netperturb.core.context.RunContext (model, source, data, seed, batch size, device)
FAULTS_CONTEXT = job_context(FAULTS["batch_size"])


if "faults" in config["studies"]:
    TARGETS += [
        f"{FAULTS_DIR}/perturbation.csv",
        f"{FAULTS_DIR}/perturbation.parquet",
        f"{FAULTS_DIR}/report/faults.html",
    ]


# Evaluate one fault-free reference network: the model itself (fp32) or stored in a format.
rule faults_baseline:
    input:
        checkpoint=model_checkpoint,
        shards=shard_dir,
    output:
        f"{FAULTS_DIR}/baseline/{{model}}/{{reference}}.csv",
    wildcard_constraints:
        reference="|".join(FAULTS_PLAN.references()),
    params:
        context=FAULTS_CONTEXT,
    resources:
        **FAULTS_RESOURCES,
    priority: 25
    log:
        f"logs/{RUN}/faults/baseline/{{model}}/{{reference}}.log",
    conda:
        conda_env(FAULTS["resources"])
    script:
        "../scripts/faults/baseline.py"


# All levels x repeats of one fault variant on each layer of one part of one model's layers
# (faults.layers_per_job; default: all of them in one job).
rule faults_perturb:
    input:
        checkpoint=model_checkpoint,
        shards=shard_dir,
    output:
        f"{FAULTS_DIR}/runs/{{model}}/{{variant}}/layers_{{part}}.csv",
    wildcard_constraints:
        variant="|".join(map(re.escape, FAULTS["perturbations"])),
        part=r"\d+of\d+",
    params:
        context=FAULTS_CONTEXT,
        layers=lambda wildcards: FAULTS_PLAN.parts[wildcards.model][wildcards.part],
        spec=lambda wildcards: FAULTS["perturbations"][wildcards.variant],
        repeats=FAULTS["repeats"],
        engine=FAULTS["engine"],
        max_replicas=FAULTS["max_replicas"],
    threads: 1
    resources:
        **FAULTS_RESOURCES,
    log:
        f"logs/{RUN}/faults/perturb/{{model}}/{{variant}}/layers_{{part}}.log",
    benchmark:
        f"benchmarks/{RUN}/faults/perturb/{{model}}/{{variant}}/layers_{{part}}.tsv"
    conda:
        conda_env(FAULTS["resources"])
    script:
        "../scripts/faults/perturb.py"


# Check the per-job tables and the reference networks' rows against the plan
# (netperturb.core.merge), then concatenate them (CSV + Parquet, each with its sha256 record).
rule faults_merge:
    input:
        runs=FAULTS_PLAN.job_tables(FAULTS_DIR),
        baselines=FAULTS_PLAN.baseline_tables(FAULTS_DIR),
    output:
        csv=f"{FAULTS_DIR}/perturbation.csv",
        parquet=f"{FAULTS_DIR}/perturbation.parquet",
        baseline=f"{FAULTS_DIR}/baseline.csv",
    params:
        # job table -> its [layer, level, repeat] cells: the merge checks each table against it
        planned=FAULTS_PLAN.job_cells(FAULTS_DIR, FAULTS["repeats"]),
    priority: 25
    log:
        f"logs/{RUN}/faults/merge.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/faults/merge.py"


# The report: accuracy and SDC against rate per layer, vulnerability ranking, fp32 vs int8,
# bit positions, findings.
rule faults_report:
    input:
        unpack(
            merged_tables(
                perturbation=rules.faults_merge.output.csv,
                baseline=rules.faults_merge.output.baseline,
            )
        ),
        notebook=workflow.source_path("../../notebooks/faults.ipynb"),
    output:
        **report_outputs("faults", "Hardware faults"),
    params:
        run=RUN,
        compare_rate=FAULTS["report"]["compare_rate"],
        n_boot=FAULTS["report"]["n_boot"],
    priority: 25
    log:
        f"logs/{RUN}/faults/report.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/common/render_report.py"
