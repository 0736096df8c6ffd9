"""Rule shen2021_merge: one table per kind over all runs (netperturb.minmax_study.merge_runs)."""

from netperturb.core.jobs import start_job
from netperturb.studies.shen2021.jobs import merge_runs

log = start_job(snakemake.log[0])
inp, out = snakemake.input, snakemake.output
for kind in ("history", "control_history", "tracking", "histograms", "robustness", "perturbation"):
    path = out[kind]  # the tracking and histogram tables are Parquet files, the others CSV
    csv, parquet = (None, path) if path.endswith(".parquet") else (path, None)
    df = merge_runs(inp[kind], csv, parquet, allow_empty=kind == "control_history")
    log.info("%s: %d runs, %d rows", kind, len(inp[kind]), len(df))
