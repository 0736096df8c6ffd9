"""Rule pravin2024_retrain: selective vs none vs full retraining of one checkpoint (netperturb.filtering_jobs.retrain)."""

from netperturb.studies.pravin2024.evaluator import AttackSpec
from netperturb.studies.pravin2024.jobs import retrain
from netperturb.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)
p, w = snakemake.params, snakemake.wildcards
r = p.retraining
retrain(
    snakemake.input.checkpoint,
    snakemake.input.scores,
    snakemake.input.shards,
    snakemake.output[0],
    study=p.run,
    dataset=p.dataset,
    model_name=w.fmodel,
    init=int(w.init),
    epoch=p.epoch,
    train_cfg={**p.train, "lr": r["lr"]},
    epochs=r["epochs"],
    score=r["score"],
    filter=r["filter"],
    tolerance=p.tolerance,
    include_bn=r["include_bn"],
    attack=AttackSpec.from_config(p.attack, p.eps),
    study_seed=p.seed,
    split=p.split,
    batch_size=p.batch_size,
    device=p.device,
)
