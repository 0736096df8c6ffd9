"""Rule pravin2024_retrain: selective vs none vs full retraining of one checkpoint (netperturb.studies.pravin2024.jobs.retrain)."""

from netperturb.core.context import RunContext
from netperturb.core.jobs import start_job
from netperturb.studies.pravin2024.evaluator import AttackSpec
from netperturb.studies.pravin2024.jobs import retrain

start_job(snakemake.log[0], snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
r = p.retraining
retrain(
    RunContext.from_job(snakemake),
    snakemake.input.scores,
    snakemake.output[0],
    init=int(w.init),
    epoch=p.epoch,
    train_cfg={**p.train, "lr": r["lr"]},
    epochs=r["epochs"],
    score=r["score"],
    filter=r["filter"],
    tolerance=p.tolerance,
    include_bn=r["include_bn"],
    attack=AttackSpec.from_config(p.attack, p.eps),
)
