"""Rule pravin2024_scores: merge sweeps and baselines, filtering scores (netperturb.filtering_jobs.merge_and_score)."""

from netperturb.studies.pravin2024.jobs import merge_and_score
from netperturb.core.jobs import start_job

start_job(snakemake.log[0])
out = snakemake.output
merge_and_score(
    snakemake.input.sweeps,
    snakemake.input.baselines,
    out.sweeps,
    out.parquet,
    out.baseline,
    out.scores,
    tolerance=snakemake.params.tolerance,
    metric=snakemake.params.metric,
    normalise=snakemake.params.score["normalise"],
    baseline=snakemake.params.score["baseline"],
    n_boot=snakemake.params.score["n_boot"],
    ci=snakemake.params.score["ci"],
    seed=snakemake.params.seed,
)
