"""Rule shen2021_merge: one table per kind over all runs (netperturb.minmax_study.merge_runs)."""

from netperturb.core.jobs import start_job
from netperturb.studies.shen2021.jobs import merge_runs

log = start_job(snakemake.log[0])
inp, out = snakemake.input, snakemake.output
for kind in ("history", "control_history", "tracking", "histograms", "robustness", "perturbation"):
    df = merge_runs(inp[kind], out[kind], allow_empty=kind == "control_history")  # Parquet or CSV by the name
    log.info("%s: %d runs, %d rows", kind, len(inp[kind]), len(df))
