"""Rule shen2021_train: one lambda x seed run of the Min-Max study (netperturb.studies.shen2021.jobs.train_run)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.shen2021.jobs import train_run

start_job(snakemake.log[0], snakemake.threads)
p, o, out = snakemake.params, snakemake.params.options, snakemake.output
train_run(
    RunContext.from_job(snakemake),
    checkpoint_out=out.checkpoint,
    history_out=out.history,
    tracking_out=out.tracking,
    histograms_out=out.histograms,
    arch=o["arch"],
    lam=p.lam,
    seed=int(snakemake.wildcards.seed),
    train_cfg=o["train"],
    track_layers=o["track_layers"],
    regularizer=o["regularizer"],
    first_epoch_points=o["first_epoch_points"],
    bins=o["histogram_bins"],
    end_fraction=o["end_fraction"],
    interval=o["interval"],
    input_size=o.get("input_size"),
)
