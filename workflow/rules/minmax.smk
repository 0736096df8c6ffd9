# The Shen et al. 2021 Min-Max study (config section `minmax`, study name shen2021): one network
# per lambda x seed trained with a fuzziness term while its weights are tracked, then attacked
# (FGSM, PGD) and perturbed internally (the Cheney et al. grid); merged tables and a report.

from netperturb.studies.shen2021.plan import check_config as _minmax_check_config

MINMAX = config["minmax"]
MINMAX_DATASET = MINMAX.get("dataset", DATASET)
MINMAX_INFO = dataset_info(MINMAX_DATASET)
MINMAX_DIR = f"{RESULTS}/minmax"
try:
    MINMAX_PLAN = _minmax_check_config(
        MINMAX,
        num_classes=MINMAX_INFO["num_classes"],
        in_channels=MINMAX_INFO["in_channels"],
    )
except ConfigError as e:
    raise WorkflowError(f"invalid config: {e}")
MINMAX_LAMS = dict(zip(MINMAX_PLAN["lams"], MINMAX["lambdas"]))
MINMAX_RUN = f"{MINMAX_DIR}/runs/lam{{lam}}_seed{{seed}}"
# every lambda x seed, for expand()
MINMAX_RUNS = dict(lam=MINMAX_PLAN["lams"], seed=MINMAX_PLAN["seeds"])


if "shen2021" in config["studies"]:
    TARGETS += [
        f"{MINMAX_DIR}/tracking.csv",
        f"{MINMAX_DIR}/robustness.csv",
        f"{MINMAX_DIR}/perturbation.csv",
        f"{RESULTS}/report/shen2021.html",
    ]


# Train one lambda x seed run with the fuzziness term; checkpoint, history, weight tracking.
rule minmax_train:
    input:
        shards=f"resources/data/{MINMAX_DATASET}/shards",
    output:
        checkpoint=f"{MINMAX_RUN}/model.pt",
        history=f"{MINMAX_RUN}/history.csv",
        tracking=f"{MINMAX_RUN}/tracking.csv",
        histograms=f"{MINMAX_RUN}/histograms.csv",
    wildcard_constraints:
        lam=r"[0-9.e+-]+",
        seed=r"\d+",
    params:
        study=STUDY,
        dataset=MINMAX_DATASET,
        lam=lambda wildcards: MINMAX_LAMS[wildcards.lam],
        options=MINMAX,
        device=config["device"],
    threads: 1
    log:
        f"logs/{STUDY}/minmax/train/lam{{lam}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{STUDY}/minmax/train/lam{{lam}}_seed{{seed}}.tsv"
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/minmax_train.py"


# FGSM and PGD accuracy against eps for one run's model.
rule minmax_attack:
    input:
        checkpoint=f"{MINMAX_RUN}/model.pt",
        shards=f"resources/data/{MINMAX_DATASET}/shards",
    output:
        f"{MINMAX_RUN}/robustness.csv",
    wildcard_constraints:
        lam=r"[0-9.e+-]+",
        seed=r"\d+",
    params:
        study=STUDY,
        dataset=MINMAX_DATASET,
        lam=lambda wildcards: MINMAX_LAMS[wildcards.lam],
        seed=config["seed"],
        split=MINMAX_INFO["eval_split"],
        attacks=MINMAX["attacks"],
        device=config["device"],
    threads: 1
    log:
        f"logs/{STUDY}/minmax/attack/lam{{lam}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{STUDY}/minmax/attack/lam{{lam}}_seed{{seed}}.tsv"
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/minmax_attack.py"


# The internal perturbation grid (every layer x perturbation x level x repeat) on one run's model.
rule minmax_perturb:
    input:
        checkpoint=f"{MINMAX_RUN}/model.pt",
        shards=f"resources/data/{MINMAX_DATASET}/shards",
    output:
        f"{MINMAX_RUN}/perturbation.csv",
    wildcard_constraints:
        lam=r"[0-9.e+-]+",
        seed=r"\d+",
    params:
        study=STUDY,
        dataset=MINMAX_DATASET,
        lam=lambda wildcards: MINMAX_LAMS[wildcards.lam],
        seed=config["seed"],
        split=MINMAX_INFO["eval_split"],
        options=MINMAX["perturbation"],
        device=config["device"],
    threads: 1
    log:
        f"logs/{STUDY}/minmax/perturb/lam{{lam}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{STUDY}/minmax/perturb/lam{{lam}}_seed{{seed}}.tsv"
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/minmax_perturb.py"


# Concatenate the per-run tables of every kind (CSV; Parquet for the large ones).
rule minmax_merge:
    input:
        history=expand(f"{MINMAX_RUN}/history.csv", **MINMAX_RUNS),
        tracking=expand(f"{MINMAX_RUN}/tracking.csv", **MINMAX_RUNS),
        histograms=expand(f"{MINMAX_RUN}/histograms.csv", **MINMAX_RUNS),
        robustness=expand(f"{MINMAX_RUN}/robustness.csv", **MINMAX_RUNS),
        perturbation=expand(f"{MINMAX_RUN}/perturbation.csv", **MINMAX_RUNS),
    output:
        history=f"{MINMAX_DIR}/history.csv",
        tracking=f"{MINMAX_DIR}/tracking.csv",
        tracking_parquet=f"{MINMAX_DIR}/tracking.parquet",
        histograms=f"{MINMAX_DIR}/histograms.csv",
        histograms_parquet=f"{MINMAX_DIR}/histograms.parquet",
        robustness=f"{MINMAX_DIR}/robustness.csv",
        perturbation=f"{MINMAX_DIR}/perturbation.csv",
    log:
        f"logs/{STUDY}/minmax/merge.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/minmax_merge.py"


# The Shen et al. 2021 report: interval histograms and fuzziness over training, robustness.
rule report_shen2021:
    input:
        history=f"{MINMAX_DIR}/history.csv",
        tracking=f"{MINMAX_DIR}/tracking.parquet",
        histograms=f"{MINMAX_DIR}/histograms.parquet",
        robustness=f"{MINMAX_DIR}/robustness.csv",
        perturbation=f"{MINMAX_DIR}/perturbation.csv",
        notebook=workflow.source_path("../../notebooks/shen2021.ipynb"),
    output:
        notebook=f"{RESULTS}/report/shen2021.ipynb",
        html=report(
            f"{RESULTS}/report/shen2021.html",
            category="Shen et al. 2021",
            caption="../report/shen2021.rst",
        ),
        figures=report(
            directory(f"{RESULTS}/report/figures/shen2021"),
            patterns=["{name}.png"],
            category="Shen et al. 2021",
            caption="../report/shen2021_figure.rst",
        ),
        tables=directory(f"{RESULTS}/report/tables/shen2021"),
    params:
        study=STUDY,
        dataset=MINMAX_DATASET,
        num_classes=MINMAX_INFO["num_classes"],
        report_eps=MINMAX["attacks"]["report_eps"],
        end_fraction=MINMAX["end_fraction"],
        regularized=MINMAX["regularizer"]["layers"],
    log:
        f"logs/{STUDY}/report/shen2021.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/render_report.py"
