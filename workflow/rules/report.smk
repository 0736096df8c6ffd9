# Papermill report notebooks, executed and converted to HTML; figures also as PNG/PDF.

if "cheney2017" in config["studies"]:
    TARGETS += [
        f"{RESULTS}/perturbation.csv",
        f"{RESULTS}/perturbation.parquet",
        f"{RESULTS}/report/cheney2017.html",
    ]


# The Cheney et al. 2017 report: accuracy against level per layer, drop table, rank-sum tests.
rule report_cheney:
    input:
        perturbation=f"{RESULTS}/perturbation.csv",
        baseline=f"{RESULTS}/baseline.csv",
        notebook=workflow.source_path("../../notebooks/cheney2017.ipynb"),
    output:
        notebook=f"{RESULTS}/report/cheney2017.ipynb",
        html=report(
            f"{RESULTS}/report/cheney2017.html",
            category="Cheney et al. 2017",
            caption="../report/cheney2017.rst",
        ),
        figures=report(
            directory(f"{RESULTS}/report/figures/cheney2017"),
            patterns=["{name}.png"],
            category="Cheney et al. 2017",
            caption="../report/cheney2017_figure.rst",
        ),
        tables=directory(f"{RESULTS}/report/tables/cheney2017"),
    params:
        study=STUDY,
        num_classes=DATA_INFO["num_classes"],
        metric=config["report"]["metric"],
        drop_level=config["report"]["drop_level"],
    log:
        f"logs/{STUDY}/report/cheney2017.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/render_report.py"
