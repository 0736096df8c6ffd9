"""The jobs of the Pravin et al. 2024 study (synaptic filtering) as plain functions of paths
and config values.

One function per rule of ``workflow/rules/pravin2024.smk`` (the scripts in
``workflow/scripts/pravin2024/`` only unpack ``snakemake`` and call these): train with
checkpoints (:func:`train_with_checkpoints`, rules ``pravin2024_train_<model>``) -> evaluate the
unfiltered checkpoints (:func:`checkpoint_baselines`, ``pravin2024_baseline``) -> per-layer and
whole-network filter sweeps (:func:`sweep_layers`, :func:`sweep_network`;
``pravin2024_sweep_layers``, ``pravin2024_sweep_network``) -> merge + filtering scores
(:func:`merge_and_score`, ``pravin2024_scores``) -> selective retraining (:func:`retrain`,
``pravin2024_retrain``) -> merge (``pravin2024_merge_retraining``, :data:`RETRAIN_COLUMNS`).
Every output is written atomically. The computations are in :mod:`.evaluator`, :mod:`.sweeps`
(with :mod:`.prefix`) and :mod:`.scores` of this package, and :mod:`netperturb.perturb.filters`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm  # plain tqdm: tqdm.auto in a notebook kernel warns (IProgress) without ipywidgets

from netperturb import __version__
from netperturb.core.context import RunContext
from netperturb.core.evaluate import resolve_device
from netperturb.core.io import write_csv
from netperturb.core.layers import find_layers, select_layers
from netperturb.core.merge import check_tables, concat_tables, read_table, read_tables, write_merged
from netperturb.core.resume import CellStore, data_fingerprint, environment
from netperturb.core.seeds import cell_generator, cell_seed
from netperturb.core.training import TrainConfig, train_classifier
from netperturb.datasets.shards import data_digest as shard_digest
from netperturb.datasets.shards import load_split, read_manifest
from netperturb.models import get_model
from netperturb.models.checkpoints import load_checkpoint, save_checkpoint
from netperturb.models.loaded import LoadedModel
from netperturb.models.loading import model_preprocess
from netperturb.studies.pravin2024.evaluator import (
    AttackSpec,
    Evaluator,
    adversarial_set,
    clean_and_adversarial,
    input_box,
)
from netperturb.studies.pravin2024.scores import (
    filtering_scores,
    freeze_for_retraining,
    retraining_selection,
)
from netperturb.studies.pravin2024.sweeps import (
    SWEEP_COLUMNS,
    baseline_rows,
    layer_sweep,
    network_sweep,
    sweep_frame,
)

log = logging.getLogger("netperturb")

__all__ = ["ONE_PER", "RETRAIN_COLUMNS", "eval_subset", "train_with_checkpoints", "checkpoint_baselines", "sweep_layers", "sweep_network", "merge_and_score", "retrain"]



#: What the merges of this study check across tables: one ``weights`` id per checkpoint (model,
#: initialisation, epoch) and one ``data_digest`` per dataset (:func:`netperturb.core.merge.check_tables`).
ONE_PER = (("weights", ("model", "init", "epoch")), ("data_digest", "dataset"))

#: Columns of the retraining table (one row per strategy and data set).
RETRAIN_COLUMNS = [
    "study", "dataset", "model", "arch", "init", "epoch", "strategy", "retrain_epochs", "selection_score",
    "selection_filter", "tolerance", "n_layers_trained", "layers_trained", "n_params_trained", "n_params",
    "data", "attack", "eps", "attack_mode", "n_images", "top1", "top5", "loss", "weights", "data_digest", "device",
    "netperturb_version",
]  # fmt: skip


def eval_subset(
    shard_dir: str | os.PathLike, split: str, n: int | None, *, study_seed: int, dataset: str
) -> tuple[Tensor, Tensor]:
    """The evaluation images of the sweeps: the whole ``split`` (``n`` None or >= its size),
    or ``n`` of them drawn uniformly without replacement by a generator seeded from the study
    seed and the dataset (the same images for every job), kept in their stored order.

    Returns:
        (images uint8 (n, C, H, W), labels int64 (n,)).
    """
    images, labels = load_split(shard_dir, split)
    if n is None or n >= len(labels):
        return images, labels
    g = cell_generator(cell_seed(study_seed, dataset, split, "eval_subset", float(n), 0))
    idx = torch.randperm(len(labels), generator=g)[: int(n)].sort().values
    return images[idx], labels[idx]


def train_with_checkpoints(
    ctx: RunContext, arch: str, train_cfg: Mapping[str, Any], init: int, checkpoints: Mapping[int, str | os.PathLike],
    history_out: str | os.PathLike, *, input_size: int | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Train ``arch`` (model ``ctx.model``, on the shards of ``ctx``, on ``ctx.device``) from
    initialisation seed ``init`` (which replaces ``train_cfg["seed"]``) and save a checkpoint
    at every epoch in ``checkpoints`` (epoch -> path), through the ``on_epoch_end`` hook of
    :func:`netperturb.core.training.train_classifier`.

    Writes the per-epoch history (``study, model, arch, init, epoch, lr, train_loss,
    test_top1, test_top5, test_loss``).

    Raises:
        ValueError: a checkpoint epoch outside [1, epochs].
    """
    shard_dir, model_name = ctx.shard_dir, ctx.model
    manifest = read_manifest(shard_dir)
    preprocess = model_preprocess(manifest, arch, input_size)
    cfg = TrainConfig.from_mapping(train_cfg, seed=int(init))
    wanted = {int(e): p for e, p in checkpoints.items()}
    bad = [e for e in wanted if not 1 <= e <= cfg.epochs]
    if bad:
        raise ValueError(f"checkpoint epochs {bad} outside 1..{cfg.epochs}")
    dev = resolve_device(ctx.device)
    train, test = load_split(shard_dir, "train"), load_split(shard_dir, "test")
    in_channels = int(train[0].shape[1])
    torch.manual_seed(cfg.seed)
    model = get_model(arch, num_classes=manifest["num_classes"], in_channels=in_channels).to(dev)

    def on_epoch_end(epoch: int, net: nn.Module, metrics: dict) -> None:
        if epoch in wanted:
            save_checkpoint(
                wanted[epoch], net, arch=arch, num_classes=manifest["num_classes"], in_channels=in_channels,
                preprocess=preprocess,
                meta={"dataset": manifest["dataset"], "model": model_name, "init": int(init), "epoch": epoch,
                      "train": cfg.__dict__ | {"extra": None}, "test_top1": float(metrics["test_top1"])},
            )  # fmt: skip
            log.info("%s init %d: checkpoint at epoch %d (test top-1 %.4f)", model_name, init, epoch, metrics["test_top1"])

    history = train_classifier(model, train, test, preprocess, cfg, on_epoch_end=on_epoch_end)
    for col, val in (("init", int(init)), ("arch", arch), ("model", model_name), ("study", ctx.run)):
        history.insert(0, col, val)
    write_csv(history, history_out)
    return history


def _checkpoint(ctx: RunContext) -> str:
    if not ctx.model_file:
        raise ValueError("this job needs the checkpoint: give the RunContext a model_file")
    return ctx.model_file


def _prepare(
    checkpoint: str | os.PathLike, device: str, channels_last: bool
) -> tuple[LoadedModel, torch.device]:
    dev = resolve_device(device)
    loaded = load_checkpoint(checkpoint, dev)
    if channels_last:
        loaded.model.to(memory_format=torch.channels_last)
    return loaded, dev


def _evaluator(
    loaded: LoadedModel,
    dev: torch.device,
    images: Tensor,
    labels: Tensor,
    attack: AttackSpec,
    *,
    study_seed: int,
    model_key: str,
    batch_size: int,
    channels_last: bool,
) -> Evaluator:
    x = loaded.preprocess(images.to(dev))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return Evaluator(
        loaded.model, x, labels.to(dev), attack.for_input(loaded.preprocess), box=input_box(loaded.preprocess, dev), study_seed=study_seed,
        model_key=model_key, batch_size=batch_size,
    )  # fmt: skip


def _row(study: str, dataset: str, model_name: str, loaded: LoadedModel, init: int, epoch: int, data_digest: str) -> dict:
    return {"study": study, "dataset": dataset, "model": model_name, "arch": loaded.arch, "init": int(init),
            "epoch": int(epoch), "weights": loaded.weights, "data_digest": data_digest}  # fmt: skip


def _model_key(model_name: str, init: int, epoch: int) -> str:
    return f"{model_name}/init{int(init)}/epoch{int(epoch)}"


def _sweep_store(out_csv, job: str, loaded: LoadedModel, dev: torch.device, *, shard_dir, split: str,
                 n_images: int | None, **settings: Any) -> CellStore:  # fmt: skip
    """The :class:`~netperturb.core.resume.CellStore` of one sweep job (cell-level resume: one
    cell per sweep point), fingerprinted by everything its numbers depend on."""
    return CellStore(out_csv, {
        "job": f"pravin2024.{job}", "weights": loaded.weights, "data": data_fingerprint(shard_dir, split),
        "n_images": n_images, "per_image_credits": True, **settings, **environment(dev),
    })  # fmt: skip


def checkpoint_baselines(
    ctx: RunContext, checkpoints: Mapping[int, str | os.PathLike], out_csv: str | os.PathLike, *, init: int,
    attack: AttackSpec, n_images: int | None = None, channels_last: bool = True,
    network_attack: AttackSpec | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Clean and adversarial accuracy of every unfiltered checkpoint (epoch -> path) of one
    (model ``ctx.model``, init) on the sweeps' evaluation images (:func:`eval_subset` of
    ``n_images``); :data:`SWEEP_COLUMNS`, ``mode="none"``. With ``network_attack`` at another
    eps (whole-network mode's own budget), each checkpoint gets a second pair of rows at that
    eps (the ``eps`` column tells them apart)."""
    study, dataset, model_name, study_seed = ctx.run, ctx.dataset, ctx.model, ctx.study_seed
    batch_size, device = ctx.batch_size, ctx.device
    images, labels = eval_subset(ctx.shard_dir, ctx.split, n_images, study_seed=study_seed, dataset=dataset)
    attacks = [attack] + ([network_attack] if network_attack is not None and network_attack.eps != attack.eps else [])
    rows = []
    for epoch, path in sorted(checkpoints.items()):
        loaded, dev = _prepare(path, device, channels_last)
        for a in attacks:
            ev = _evaluator(loaded, dev, images, labels, a, study_seed=study_seed,
                            model_key=_model_key(model_name, init, epoch), batch_size=batch_size,
                            channels_last=channels_last)  # fmt: skip
            digest = shard_digest(ctx.shard_dir, ctx.split)
            rows += baseline_rows(ev, _row(study, dataset, model_name, loaded, init, epoch, digest))
            log.info("%s init %d epoch %d eps %g: clean %.4f adversarial %.4f", model_name, init, epoch, a.eps,
                     rows[-2]["top1"], rows[-1]["top1"])  # fmt: skip
    df = sweep_frame(rows, device=str(resolve_device(device)))
    write_csv(df, out_csv)
    return df


def sweep_layers(
    ctx: RunContext, out_csv: str | os.PathLike, *, init: int, epoch: int, layers: Sequence[str],
    filters: Sequence[str], steps: int, attack: AttackSpec, n_images: int | None = None, channels_last: bool = True,
    reuse_prefix: bool = True, max_replicas: int = 4, pulse_steps: int | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Per-layer mode for some layers of one checkpoint (``ctx.model_file``, of model
    ``ctx.model``, initialisation ``init``, epoch ``epoch``): for each layer, every filter x
    ``steps`` thresholds over the layer's weight range, clean and adversarial -> one CSV
    (:data:`SWEEP_COLUMNS`, layers in the given order). ``pulse_steps`` sets the pulse
    filter's half-width (None = ``steps``; :func:`netperturb.studies.pravin2024.sweeps.layer_sweep`).

    One job sweeps several layers so that the model, the images and the process start-up
    (about 12 s of imports on a CPU) are paid once (``pravin2024.layers_per_job``).
    Each layer is evaluated with clean-prefix reuse (:class:`netperturb.studies.pravin2024.prefix.PrefixReuse`)
    unless ``reuse_prefix`` is False, up to ``max_replicas`` sweep points at once
    (:class:`netperturb.studies.pravin2024.batched.BatchedSweep`; 1 = one at a time); the
    numbers are the same either way.

    Cell-level resume (:mod:`netperturb.core.resume`): every evaluated sweep point is appended
    to ``<out_csv>.partial.jsonl``; a restarted job evaluates only the points missing there
    and writes the same CSV as an uninterrupted run (the same holds for :func:`sweep_network`).

    Raises:
        LayerSelectionError: a name in ``layers`` is not a Conv2d/Linear module path of the model.
        ValueError: ``layers`` is empty.
    """
    if not layers:
        raise ValueError("sweep_layers: no layers given")
    study, dataset, model_name, study_seed = ctx.run, ctx.dataset, ctx.model, ctx.study_seed
    shard_dir, split = ctx.shard_dir, ctx.split
    batch_size, progress = ctx.batch_size, ctx.progress
    loaded, dev = _prepare(_checkpoint(ctx), ctx.device, channels_last)
    infos = select_layers(find_layers(loaded.model), list(layers))
    images, labels = eval_subset(shard_dir, split, n_images, study_seed=study_seed, dataset=dataset)
    key = _model_key(model_name, init, epoch)
    ev = _evaluator(loaded, dev, images, labels, attack, study_seed=study_seed, model_key=key, batch_size=batch_size,
                    channels_last=channels_last)  # fmt: skip
    row = _row(study, dataset, model_name, loaded, init, epoch, shard_digest(shard_dir, split))
    store = _sweep_store(out_csv, "sweep_layers", loaded, dev, shard_dir=shard_dir, split=split, n_images=n_images,
                         model_key=key, study_seed=int(study_seed), attack=dataclasses.asdict(attack), steps=int(steps),
                         pulse_steps=int(pulse_steps or steps), batch_size=int(batch_size),
                         channels_last=bool(channels_last), reuse_prefix=bool(reuse_prefix))  # fmt: skip
    rows: list[dict] = []
    with tqdm(total=len(infos) * len(filters) * steps, desc=f"{key} {len(infos)} layer(s)", disable=not progress,
              mininterval=5) as bar:  # fmt: skip
        for info in infos:
            rows += layer_sweep(ev, info, filters, steps, row=row, bar=bar, reuse_prefix=reuse_prefix, store=store,
                               max_replicas=int(max_replicas), pulse_steps=pulse_steps)  # fmt: skip
            log.info("%s: %s swept (%d points)", key, info.path, len(filters) * steps)
    df = sweep_frame(rows, device=str(dev))
    store.finish(df)
    return df


def sweep_network(
    ctx: RunContext, out_csv: str | os.PathLike, *, init: int, epoch: int, layers: str | Sequence[str],
    filters: Sequence[str], steps: int, grid: Sequence[float] | None, attack: AttackSpec, n_images: int | None = None,
    channels_last: bool = True, pulse_steps: int | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Whole-network mode for one checkpoint (``ctx.model_file``): every layer of the selection
    filtered at once at each threshold of the shared grid (``grid`` = (lo, hi), None = the
    weights' own range) -> CSV (:data:`SWEEP_COLUMNS`); ``pulse_steps`` as in :func:`sweep_layers`."""
    study, dataset, model_name, study_seed = ctx.run, ctx.dataset, ctx.model, ctx.study_seed
    shard_dir, split = ctx.shard_dir, ctx.split
    batch_size, progress = ctx.batch_size, ctx.progress
    loaded, dev = _prepare(_checkpoint(ctx), ctx.device, channels_last)
    chosen = select_layers(find_layers(loaded.model), layers)
    images, labels = eval_subset(shard_dir, split, n_images, study_seed=study_seed, dataset=dataset)
    ev = _evaluator(loaded, dev, images, labels, attack, study_seed=study_seed,
                    model_key=_model_key(model_name, init, epoch), batch_size=batch_size, channels_last=channels_last)  # fmt: skip
    grid = tuple(grid) if grid is not None else None
    store = _sweep_store(out_csv, "sweep_network", loaded, dev, shard_dir=shard_dir, split=split, n_images=n_images,
                         model_key=_model_key(model_name, init, epoch), study_seed=int(study_seed),
                         attack=dataclasses.asdict(attack), steps=int(steps), pulse_steps=int(pulse_steps or steps),
                         grid=grid and [float(g) for g in grid], batch_size=int(batch_size),
                         channels_last=bool(channels_last), layers=[l.path for l in chosen])  # fmt: skip
    rows = network_sweep(ev, chosen, filters, steps, grid=grid, pulse_steps=pulse_steps,
                         row=_row(study, dataset, model_name, loaded, init, epoch, shard_digest(shard_dir, split)),
                         progress=progress, store=store)  # fmt: skip
    df = sweep_frame(rows, device=str(dev))
    store.finish(df)
    return df


def merge_and_score(
    sweeps: Sequence[str | os.PathLike],
    baselines: Sequence[str | os.PathLike],
    sweeps_csv: str | os.PathLike,
    sweeps_parquet: str | os.PathLike,
    baseline_csv: str | os.PathLike,
    scores_csv: str | os.PathLike,
    *,
    tolerance: float,
    metric: str = "top1",
    normalise: str = "first_point",
    baseline: str = "density",
    n_boot: int = 0,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Merge the sweep and baseline tables (checked first: :func:`netperturb.core.merge.check_tables`
    with :data:`ONE_PER`), compute the filtering scores
    (:func:`netperturb.studies.pravin2024.scores.filtering_scores` with ``normalise`` and
    ``baseline``, ``pravin2024.score.*``; with ``n_boot > 0`` their bootstrap intervals over
    the evaluation images, ``pravin2024.score.n_boot`` / ``.ci``, resamples from ``seed``)
    and write all three. Returns the scores."""
    frames = read_tables([*sweeps, *baselines], SWEEP_COLUMNS)
    check_tables(frames, one_per=ONE_PER)  # provenance filled; one weights id per checkpoint, one data digest
    sw = concat_tables(sweeps, SWEEP_COLUMNS, frames=frames)
    sw = sw.sort_values(["model", "init", "epoch", "mode", "layer_index", "perturbation", "step", "data"],
                        kind="stable").reset_index(drop=True)  # fmt: skip
    base = concat_tables(baselines, SWEEP_COLUMNS, frames=frames).sort_values(["model", "init", "epoch", "data"]).reset_index(drop=True)
    scores = filtering_scores(sw, base, tolerance=tolerance, metric=metric, normalise=normalise, baseline=baseline,
                              n_boot=n_boot, ci=ci, seed=seed)  # fmt: skip
    write_merged(sw, sweeps_csv, sweeps_parquet)
    write_merged(base, baseline_csv)
    write_merged(scores, scores_csv)
    log.info("merged %d sweep rows; %d scores", len(sw), len(scores))
    return scores


def _n_params(model: nn.Module, names: Sequence[str] | None = None) -> int:
    named = dict(model.named_parameters())
    return sum(named[n].numel() for n in (names if names is not None else named))


def retrain(
    ctx: RunContext, scores_csv: str | os.PathLike, out_csv: str | os.PathLike, *, init: int, epoch: int,
    train_cfg: Mapping[str, Any], epochs: int, score: str, filter: str, tolerance: float, include_bn: bool,
    attack: AttackSpec,
) -> pd.DataFrame:  # fmt: skip
    """Selective retraining of one checkpoint (``ctx.model_file``), compared with no and with
    full retraining.

    ``none`` is the checkpoint as it is; ``selective`` trains only the layers that
    :func:`netperturb.studies.pravin2024.scores.retraining_selection` selects (robust or antifragile), with
    everything else frozen (:func:`netperturb.studies.pravin2024.scores.freeze_for_retraining`); ``full``
    trains every parameter. Both run ``epochs`` epochs with the same data order and schedule
    (``train_cfg`` with seed ``init``). Each network is then evaluated on the whole ``split``,
    clean and adversarial (in ``regenerate`` mode each network is attacked itself; in
    ``reuse`` mode all three are evaluated on the examples made against the checkpoint).
    If no layer is selected, ``selective`` is the checkpoint itself (0 parameters trained).

    Raises:
        RuntimeError: a frozen parameter or buffer changed (a bug; never expected).
    """
    study, dataset, model_name, study_seed = ctx.run, ctx.dataset, ctx.model, ctx.study_seed
    shard_dir, split = ctx.shard_dir, ctx.split
    batch_size = ctx.batch_size
    dev = resolve_device(ctx.device)
    loaded = load_checkpoint(_checkpoint(ctx), dev)
    attack = attack.for_input(loaded.preprocess)  # eps in pixel units -> the model's input units
    scores = read_table(scores_csv)
    sel = retraining_selection(scores, model=model_name, init=init, epoch=epoch, score=score, filter=filter,
                               tolerance=tolerance)  # fmt: skip
    chosen = [l for l in find_layers(loaded.model) if l.path in set(sel.loc[sel["selected"], "layer"])]
    train, test = load_split(shard_dir, "train"), load_split(shard_dir, split)
    cfg = TrainConfig.from_mapping(train_cfg, seed=int(init), epochs=int(epochs))

    nets: dict[str, tuple[nn.Module, list[str]]] = {"none": (loaded.model, [])}
    selective = copy.deepcopy(loaded.model)
    trainable, frozen = freeze_for_retraining(selective, chosen, include_bn=include_bn)
    if trainable:
        before = {k: v.detach().clone() for k, v in selective.state_dict().items()}
        train_classifier(selective, train, test, loaded.preprocess, cfg, frozen_modules=frozen)
        owners = {n.rpartition(".")[0] for n in trainable}
        changed = [k for k, v in selective.state_dict().items()
                   if k.rpartition(".")[0] not in owners and not torch.equal(v, before[k])]  # fmt: skip
        if changed:
            raise RuntimeError(f"selective retraining changed frozen tensors: {changed[:5]}")
    selective.eval().requires_grad_(False)
    nets["selective"] = (selective, trainable)
    full = copy.deepcopy(loaded.model).requires_grad_(True)
    train_classifier(full, train, test, loaded.preprocess, cfg)
    full.eval().requires_grad_(False)
    nets["full"] = (full, [n for n, _ in full.named_parameters()])

    x = loaded.preprocess(test[0].to(dev))
    y = test[1].to(dev)
    box = input_box(loaded.preprocess, dev)
    seed = cell_seed(study_seed, _model_key(model_name, init, epoch), "", "retraining", 0.0, 0)
    x_adv = adversarial_set(loaded.model, x, y, attack, box=box, seed=seed, batch_size=batch_size) if attack.mode == "reuse" else None
    rows = []
    digest = shard_digest(shard_dir, split)
    labels = ",".join(l.label for l in chosen)
    for strategy, (net, names) in nets.items():
        counts = clean_and_adversarial(net, x, y, attack, x_adv=x_adv, box=box, seed=seed, batch_size=batch_size)
        for data, c in zip(("clean", "adversarial"), counts):
            rows.append({
                "study": study, "dataset": dataset, "model": model_name, "arch": loaded.arch, "init": int(init),
                "epoch": int(epoch), "strategy": strategy, "retrain_epochs": 0 if strategy == "none" else int(epochs),
                "selection_score": score, "selection_filter": filter, "tolerance": tolerance,
                "n_layers_trained": {"none": 0, "selective": len(chosen) if names else 0, "full": len(find_layers(net))}[strategy],
                "layers_trained": {"none": "", "selective": labels if names else "", "full": "all"}[strategy],
                "n_params_trained": _n_params(net, names) if names else 0, "n_params": _n_params(net),
                "data": data, "attack": attack.name, "eps": attack.eps, "attack_mode": attack.mode,
                **c.metrics(), "weights": loaded.weights, "data_digest": digest, "device": str(dev),
                "netperturb_version": __version__,
            })  # fmt: skip
        log.info("%s: clean %.4f adversarial %.4f", strategy, rows[-2]["top1"], rows[-1]["top1"])
    df = pd.DataFrame(rows, columns=RETRAIN_COLUMNS)
    write_csv(df, out_csv)
    return df
