# The run's index page, results/<run>/index.html: every study's report with its findings, the
# merged tables, the config that produced the run and the software versions; Snakemake's report
# when it exists (`make report` writes it to SNAKEMAKE_REPORT and remakes this page).
# Included after every study's file: its input is what they added to TARGETS.

INDEX = f"{RESULTS}/index.html"
SNAKEMAKE_REPORT = f"{RESULTS}/snakemake-report.html"
TARGETS.append(INDEX)


# One page per run, links relative to results/<run>/ (netperturb.core.report.write_index): every
# study present there, this config's and those of another config that joined the run folder.
rule index:
    input:
        lambda wildcards: [t for t in TARGETS if t != INDEX],
    output:
        html=INDEX,
        config=f"{RESULTS}/config.yaml",
        # each study's own copy: another config that joins the run folder (another study on
        # the same models, netperturb.core.runfolder) replaces config.yaml, not these
        study_configs=[f"{study_dir(s)}/config.yaml" for s in config["studies"]],
    params:
        run=RUN,
        studies=config["studies"],
        config=config,
        files=CONFIGFILES,
        snakemake_report=SNAKEMAKE_REPORT,
    priority: 25
    log:
        f"logs/{RUN}/index.log",
    localrule: True
    conda:
        "../../envs/netperturb.yaml"
    script:
        "../scripts/common/index.py"
