# netperturb: how CNNs behave when their internal weights and architecture are perturbed.
# Reading order: README.md -> the docs (docs/, make docs) -> this file -> workflow/rules/*.smk -> src/netperturb.

from snakemake.utils import min_version

min_version("9.0")


# The default study, unless `--configfile` names another: a config file given on the command
# line replaces config/config.yaml instead of being merged into it (its models and
# perturbations would otherwise be added to the other file's).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# common.smk validates the config against config/schema.yaml (filling in defaults) before
# anything else, then plans the shared inputs; each study's file plans its jobs from the
# library (netperturb.studies.<study>.plan). A bad key stops the run there.
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/cheney2017.smk"
include: "workflow/rules/shen2021.smk"
include: "workflow/rules/pravin2024.smk"
include: "workflow/rules/faults.smk"
include: "workflow/rules/index.smk"


# Everything the config asks for: every listed study's merged tables and rendered reports, and
# the run's index page.
rule all:
    input:
        TARGETS,
    default_target: True
