"""The jobs of the Shen et al. 2021 study (workflow rules ``shen2021_*`` in
``workflow/rules/shen2021.smk``, scripts in ``workflow/scripts/shen2021/``) as plain functions.

One *run* = one training of the architecture with fuzziness weight ``lam`` and training seed
``seed`` (:func:`~netperturb.studies.shen2021.plan.run_name`). Per run the workflow calls
:func:`train_run` (``shen2021_train``: training with the fuzziness term, weight tracking,
checkpoint), then :func:`evaluate_run` (``shen2021_evaluate``): :func:`attack_run` (FGSM / PGD
accuracy against eps) and :func:`perturb_run` (the Cheney et al. grid of
:mod:`netperturb.perturb.grid` on the trained model: the cross-study link), then
:func:`merge_runs` (``shen2021_merge``). Definitions: :mod:`netperturb.studies.shen2021.minmax`;
what the config plans: :mod:`netperturb.studies.shen2021.plan`.

Common random numbers: the PGD starts and the perturbation masks / noise of a run are seeded
from ``(study seed, arch, training seed, ...)``, not from ``lam``, so every lambda of one seed
meets the same random draws and the comparison across lambda is paired.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping, Sequence

import pandas as pd
import torch

from netperturb import __version__
from netperturb.core.config import expand_levels
from netperturb.core.context import RunContext
from netperturb.core.evaluate import resolve_device
from netperturb.core.io import is_parquet, write_csv, write_table
from netperturb.core.layers import find_layers, select_layers
from netperturb.core.merge import merge_tables, write_merged
from netperturb.core.resume import CellStore, counts_from_json, data_fingerprint, environment, partial_path
from netperturb.core.seeds import cell_seed
from netperturb.core.training import TrainConfig, train_classifier
from netperturb.datasets.shards import data_digest as shard_digest
from netperturb.datasets.shards import load_split, read_manifest
from netperturb.models import get_model
from netperturb.models.checkpoints import load_checkpoint, save_checkpoint
from netperturb.models.loading import model_preprocess
from netperturb.perturb.grid import COLUMNS, LayerJob, run_layer_job
from netperturb.perturb.registry import make_perturbation
from netperturb.studies.shen2021.controls import SHUFFLED, TRAINED, WALK, shuffled_labels
from netperturb.studies.shen2021.minmax import (
    FuzzinessRegularizer,
    WeightTracker,
    first_epoch_steps,
    robust_accuracy,
)
from netperturb.studies.shen2021.plan import control_name, run_name, seed_name

log = logging.getLogger("netperturb")

__all__ = ["RUN_COLUMNS", "train_run", "attack_run", "perturb_run", "evaluate_run", "merge_runs"]


#: Columns that identify a run in every table of the study (after study, dataset, model, arch).
RUN_COLUMNS = ["lam", "train_seed"]


def _head(study: str, dataset: str, arch: str, lam: float, seed: int) -> dict[str, Any]:
    return {"study": study, "dataset": dataset, "model": run_name(arch, lam, seed), "arch": arch,
            "lam": float(lam), "train_seed": int(seed)}  # fmt: skip


def train_run(
    ctx: RunContext, *, checkpoint_out: str | os.PathLike, history_out: str | os.PathLike,
    tracking_out: str | os.PathLike, histograms_out: str | os.PathLike, arch: str, lam: float, seed: int,
    train_cfg: Mapping[str, Any], track_layers: str | Sequence[str] = "all",
    regularizer: Mapping[str, Any] | None = None, first_epoch_points: Sequence[float] = (0.05, 0.1, 0.25, 0.5),
    bins: int = 20, end_fraction: float = 0.1, interval: Sequence[str] = ("current",), input_size: int | None = None,
    driftless_walk: bool = True, shuffle_labels: bool = False,
) -> pd.DataFrame:  # fmt: skip
    """Train one run (on the shards of ``ctx``, on ``ctx.device``): cross-entropy + ``lam`` x mean fuzziness of the regularised layers
    (:class:`~netperturb.studies.shen2021.minmax.FuzzinessRegularizer`; ``lam = 0`` trains without the term,
    bit for bit the plain training), recording the weights of ``track_layers`` at
    initialisation, at ``first_epoch_points`` (fractions of epoch 1) and after every epoch.

    Writes: the checkpoint (:func:`~netperturb.models.checkpoints.save_checkpoint`, meta with lam,
    seed, regulariser, final accuracy and fuzziness), the per-epoch history
    (:func:`~netperturb.core.training.train_classifier`'s columns plus ``reg_fuzziness``, the mean
    fuzziness of the regularised layers), the tracking table
    (:func:`~netperturb.studies.shen2021.minmax.weight_stats` per snapshot) and the histogram table
    (:func:`~netperturb.studies.shen2021.minmax.weight_histograms` per snapshot); all led by ``study, dataset,
    model, arch, lam, train_seed``. The tracking and histogram tables are Parquet where their
    file names end in ``.parquet`` (as in the workflow: ~13 MB of CSV per LeNet-5 run), else CSV.

    Args:
        train_cfg: ``epochs, batch_size, lr, weight_decay, max_shift, optimizer, momentum``
            (others are ignored; the seed is ``seed``).
        regularizer: ``layers`` (selection, default ``["conv*"]``), ``scope``, ``eps``,
            ``detach_bounds`` (see :func:`~netperturb.studies.shen2021.minmax.differentiable_fuzziness`).
        interval: readings of the interval tracked side by side (``current``, ``init_bound``,
            ``trajectory``: :mod:`netperturb.studies.shen2021.intervals`); the tracking and
            histogram tables get one block of rows per reading (column ``interval``).
        driftless_walk: track the driftless walk control alongside
            (:class:`~netperturb.studies.shen2021.controls.DriftlessWalk`, signs seeded from
            the training seed alone, so every lambda of a seed gets the same signs): tracking
            rows with ``control = "driftless walk"``.
        shuffle_labels: the shuffled-label control instead of a trained run: the training
            labels permuted once (:func:`~netperturb.studies.shen2021.controls.shuffled_labels`,
            seeded from the training seed), the test labels kept (its test accuracy is
            chance); ``model`` is :func:`~netperturb.studies.shen2021.plan.control_name`,
            ``control = "shuffled labels"``, no walk. Same initialisation, data order,
            optimiser and epochs as the trained run of that seed.

    Returns:
        The history table.

    Raises:
        LayerSelectionError: a layer selection matches nothing.
        ValueError: lam < 0, a bad first-epoch point or training option.
    """
    study, dataset, shard_dir, progress = ctx.run, ctx.dataset, ctx.shard_dir, ctx.progress
    reg_cfg = dict(regularizer or {})
    manifest = read_manifest(shard_dir)
    preprocess = model_preprocess(manifest, arch, input_size)
    cfg = TrainConfig.from_mapping(train_cfg, seed=int(seed))
    dev = resolve_device(ctx.device)
    train, test = load_split(shard_dir, "train"), load_split(shard_dir, "test")
    if shuffle_labels:
        if lam != 0:
            raise ValueError(f"the shuffled-label control trains without the fuzziness term (lam 0), got lam {lam}")
        train = (train[0], shuffled_labels(train[1], cell_seed(int(seed), seed_name(arch, seed), "", SHUFFLED, 0.0, 0)))
    in_channels = int(train[0].shape[1])
    torch.manual_seed(cfg.seed)  # the same initialisation for every lambda of this seed
    model = get_model(arch, num_classes=manifest["num_classes"], in_channels=in_channels).to(dev)
    layers = find_layers(model)
    tracked = select_layers(layers, track_layers)
    reg_layers = select_layers(layers, reg_cfg.get("layers", ["conv*"]))
    term = FuzzinessRegularizer(
        reg_layers, lam, scope=reg_cfg.get("scope", "layer"), eps=float(reg_cfg.get("eps", 1e-6)),
        detach_bounds=bool(reg_cfg.get("detach_bounds", False)),
    )  # fmt: skip
    steps_per_epoch = math.ceil(len(train[1]) / cfg.batch_size)
    head = _head(study, dataset, arch, lam, seed)
    if shuffle_labels:
        head["model"] = control_name(arch, seed)
    walk_seed = cell_seed(int(seed), seed_name(arch, seed), "", WALK, 0.0, 0) if driftless_walk and not shuffle_labels else None
    tracker = WeightTracker(
        tracked, steps_per_epoch, first_epoch_steps(first_epoch_points, steps_per_epoch),
        bins=bins, end_fraction=end_fraction, meta=head, readings=tuple(interval),
        control=SHUFFLED if shuffle_labels else TRAINED, walk_seed=walk_seed,
    )  # fmt: skip
    reg_f: dict[int, float] = {}

    def on_epoch_end(epoch: int, m: torch.nn.Module, metrics: Mapping[str, Any]) -> None:
        tracker.on_epoch_end(epoch, m, metrics)
        with torch.no_grad():
            reg_f[epoch] = term.fuzziness(m).item()

    history = train_classifier(
        model, train, test, preprocess, cfg, regularizer=term if lam > 0 else None,
        on_step=tracker.on_step, on_epoch_end=on_epoch_end, progress=progress,
    )  # fmt: skip
    history["reg_fuzziness"] = history["epoch"].map(reg_f)
    for i, (k, v) in enumerate({**head, "control": SHUFFLED if shuffle_labels else TRAINED}.items()):
        history.insert(i, k, v)
    final = history.iloc[-1]
    save_checkpoint(
        checkpoint_out, model, arch=arch, num_classes=manifest["num_classes"], in_channels=in_channels,
        preprocess=preprocess,
        meta={"dataset": manifest["dataset"], "study": "shen2021", "lam": float(lam), "train_seed": int(seed),
              "control": SHUFFLED if shuffle_labels else TRAINED,
              "train": {k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "max_shift", "seed",
                                                     "optimizer", "momentum")},
              "regularizer": {"layers": [l.path for l in reg_layers], "scope": term.scope, "eps": term.eps,
                              "detach_bounds": term.detach_bounds},
              "test_top1": float(final["test_top1"]), "test_top5": float(final["test_top5"]),
              "reg_fuzziness": float(final["reg_fuzziness"])},
    )  # fmt: skip
    write_csv(history, history_out)
    write_table(tracker.stats(), tracking_out)  # Parquet or CSV by the file name (the workflow: Parquet)
    write_table(tracker.histograms(), histograms_out)
    log.info(
        "%s: test top-1 %.4f, fuzziness of %s %.4f -> %.4f after %d epochs",
        head["model"], final["test_top1"], ",".join(l.label for l in reg_layers), reg_f[0], reg_f[cfg.epochs], cfg.epochs,
    )  # fmt: skip
    return history


def _checkpoint(ctx: RunContext) -> str:
    if not ctx.model_file:
        raise ValueError("this job needs the run's checkpoint: give the RunContext a model_file")
    return ctx.model_file


def _provenance(loaded, device: str, data_digest: str) -> dict[str, Any]:
    return {"weights": loaded.weights, "data_digest": data_digest, "precision": "fp32", "device": device,
            "netperturb_version": __version__}


def attack_run(
    ctx: RunContext, out_csv: str | os.PathLike, *, lam: float, seed: int, attacks: Sequence[str] = ("fgsm", "pgd"),
    eps_values: Sequence[float] = (0.0, 0.05, 0.1, 0.2), pgd_steps: int = 10, pgd_step_size: float | None = None,
    keep_partial: bool = False,
) -> pd.DataFrame:  # fmt: skip
    """Robust accuracy of one run's model (``ctx.model_file``) against every attack and eps
    (:func:`~netperturb.studies.shen2021.minmax.robust_accuracy`; eps in [0, 1] pixel units) -> CSV.

    Columns: ``study, dataset, model, arch, lam, train_seed, attack, eps, steps, n_images,
    top1, top5, loss, weights, data_digest, precision, device, netperturb_version``.

    Cell-level resume (:mod:`netperturb.core.resume`): each (attack, eps) is a cell appended
    to ``<out_csv>.partial.jsonl`` when done (each eps is computed on its own, with its own
    PGD seeds); a restarted job computes only the missing ones and writes the same CSV.
    ``keep_partial`` leaves the partial file after the CSV is written (:func:`evaluate_run`).
    """
    study, dataset, study_seed, shard_dir, split = ctx.run, ctx.dataset, ctx.study_seed, ctx.shard_dir, ctx.split
    dev = resolve_device(ctx.device)
    loaded = load_checkpoint(_checkpoint(ctx), dev)
    images, labels = load_split(shard_dir, split)
    head = _head(study, dataset, loaded.arch, lam, seed)
    digest = shard_digest(shard_dir, split)
    key = (int(study_seed), seed_name(loaded.arch, seed))
    store = CellStore(out_csv, {
        "job": "shen2021.attack_run", "weights": loaded.weights, "data": data_fingerprint(shard_dir, split),
        "seed_key": list(key), "pgd_steps": int(pgd_steps), "pgd_step_size": pgd_step_size, **environment(dev),
    })  # fmt: skip
    rows = []
    for attack in attacks:
        for eps in eps_values:
            r = store.compute((attack, float(eps)), lambda: robust_accuracy(
                loaded.model, images, labels, loaded.preprocess, attack=attack, eps_values=[eps],
                seed_key=key, pgd_steps=pgd_steps, pgd_step_size=pgd_step_size,
            )[0])  # fmt: skip
            rows.append({**head, **r, **_provenance(loaded, str(dev), digest)})
            log.info("%s %s eps %g: top-1 %.4f", head["model"], attack, r["eps"], r["top1"])
    df = pd.DataFrame(rows)
    store.finish(df, keep_partial=keep_partial)
    return df


def perturb_run(
    ctx: RunContext, out_csv: str | os.PathLike, *, lam: float, seed: int,
    perturbations: Mapping[str, Mapping[str, Any]], layers: str | Sequence[str] = "all", repeats: int = 3,
) -> pd.DataFrame:  # fmt: skip
    """The internal perturbation grid (:func:`netperturb.perturb.grid.run_layer_job`) on one run's
    model (``ctx.model_file``, batches of ``ctx.batch_size``): every selected layer x
    perturbation x level x repeat, plus the clean network as
    one row (perturbation ``none``) -> CSV.

    Cell seeds come from the :func:`~netperturb.studies.shen2021.plan.seed_name` of the run,
    not its ``model`` name, so every lambda of one training seed gets the same knockout masks
    and noise draws.

    Args:
        perturbations: name -> options with ``levels`` (list or {start, stop, step}) and the
            perturbation's own options (as ``cheney2017.perturbations`` of the config).

    Cell-level resume (:mod:`netperturb.core.resume`): every finished cell (and the clean
    row) is appended to ``<out_csv>.partial.jsonl``; a restarted job computes only the
    missing cells and writes the same CSV as an uninterrupted run.

    Returns:
        :data:`netperturb.perturb.grid.COLUMNS` plus ``lam, train_seed``.

    Raises:
        LayerSelectionError: the selection matches nothing.
        ValueError: bad perturbation, option or level.
    """
    from netperturb.perturb.grid import baseline_table

    study, dataset, study_seed, shard_dir, split = ctx.run, ctx.dataset, ctx.study_seed, ctx.shard_dir, ctx.split
    batch_size, progress = ctx.batch_size, ctx.progress
    dev = resolve_device(ctx.device)
    loaded = load_checkpoint(_checkpoint(ctx), dev)
    images, labels = load_split(shard_dir, split)
    chosen = select_layers(find_layers(loaded.model), layers)
    digest = shard_digest(shard_dir, split)
    key = seed_name(loaded.arch, seed)
    name = run_name(loaded.arch, lam, seed)
    store = CellStore(out_csv, {
        "job": "shen2021.perturb_run", "weights": loaded.weights, "data": data_fingerprint(shard_dir, split),
        "seed_key": [int(study_seed), key], "options": {p: {k: v for k, v in o.items() if k != "levels"}
                                                       for p, o in perturbations.items()},
        "batch_size": int(batch_size), **environment(dev),
    }, check=counts_from_json)  # fmt: skip
    frames = [
        baseline_table(loaded, images, labels, study=study, dataset=dataset, model=name,
                       study_seed=study_seed, batch_size=batch_size, store=store, data_digest=digest)
    ]  # fmt: skip
    for info in chosen:
        for pert, opts in perturbations.items():
            job = LayerJob(
                study=study, dataset=dataset, model=key, layer=info,
                perturbation=make_perturbation(pert, **{k: v for k, v in opts.items() if k != "levels"}),
                levels=expand_levels(opts["levels"], key=f"shen2021.perturbation.perturbations.{pert}.levels"),
                repeats=int(repeats), study_seed=int(study_seed), data_digest=digest,
            )  # fmt: skip
            frames.append(run_layer_job(job, loaded, images, labels, batch_size=batch_size, progress=progress, store=store))
    df = pd.concat(frames, ignore_index=True)[COLUMNS]
    df["model"] = name
    df.insert(len(COLUMNS), "lam", float(lam))
    df.insert(len(COLUMNS) + 1, "train_seed", int(seed))
    store.finish(df)
    return df


def evaluate_run(
    ctx: RunContext, robustness_csv: str | os.PathLike, perturbation_csv: str | os.PathLike, *, lam: float, seed: int,
    attacks: Mapping[str, Any], perturbation: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Everything measured on one trained run's model, in one job (rule ``shen2021_evaluate``):
    :func:`attack_run` -> ``robustness_csv``, then :func:`perturb_run` -> ``perturbation_csv``.
    One job instead of two saves the start of a process (about 3 s of imports and loading on
    a CPU) per run.

    Resume: each table has its own cells (:mod:`netperturb.core.resume`); the attack's partial
    file is removed only after the perturbation table is written, so a job that fails in the
    grid (Snakemake then deletes both outputs) recomputes no attack cell when it is rerun.

    Args:
        attacks: the ``shen2021.attacks`` options (``methods``, ``eps``, ``pgd_steps``,
            optional ``pgd_step_size``).
        perturbation: the ``shen2021.perturbation`` options (``perturbations``, ``layers``,
            ``repeats``).

    Returns:
        (robustness table, perturbation table), as the two functions return them.

    Raises:
        as :func:`attack_run` and :func:`perturb_run`.
    """
    rob = attack_run(ctx, robustness_csv, lam=lam, seed=seed, attacks=attacks["methods"], eps_values=attacks["eps"],
                     pgd_steps=attacks["pgd_steps"], pgd_step_size=attacks.get("pgd_step_size"), keep_partial=True)  # fmt: skip
    pert = perturb_run(ctx, perturbation_csv, lam=lam, seed=seed, perturbations=perturbation["perturbations"],
                       layers=perturbation["layers"], repeats=perturbation["repeats"])  # fmt: skip
    partial_path(robustness_csv).unlink(missing_ok=True)
    return rob, pert


def merge_runs(
    inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *, allow_empty: bool = False,
) -> pd.DataFrame:
    """Concatenate one kind of per-run table (history, tracking, histograms, robustness,
    perturbation; the shuffled-label controls' histories; CSV or Parquet files) into one, sorted
    by lam and seed (stable otherwise), written to ``out`` as Parquet or CSV by its name
    (:func:`netperturb.core.io.is_parquet`). With ``allow_empty`` and no inputs (e.g. the
    controls switched off), an empty table with the columns ``model, lam, train_seed`` is written.

    Raises:
        ValueError: no inputs (without ``allow_empty``), or a table without ``model, lam,
            train_seed`` (names the file).
    """
    out_csv, out_parquet = (None, out) if is_parquet(out) else (out, None)
    if allow_empty and not inputs:
        empty = pd.DataFrame(columns=["model", *RUN_COLUMNS])
        write_merged(empty, out_csv, out_parquet)  # with its sha256 record, like every merged table
        return empty
    return merge_tables(
        inputs, out_csv, out_parquet, columns=("model", *RUN_COLUMNS), sort_by=RUN_COLUMNS, empty_is_nan=True
    )
