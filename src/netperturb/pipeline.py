"""The workflow's jobs as plain functions of paths and config values.

Each function here is what one Snakemake rule runs (the scripts in ``workflow/scripts`` only
unpack ``snakemake.input/output/params`` and call one of these); the CLI calls the same
functions. Every output is written atomically.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import pandas as pd
import torch

from .checkpoints import load_checkpoint, save_checkpoint
from .config import expand_levels
from .data import Preprocess, load_split, prepare_digits, prepare_mnist, read_manifest
from .evaluate import resolve_device
from .grid import COLUMNS, LayerJob, baseline_table, run_layer_job
from .io import write_csv, write_parquet
from .layers import find_layers, select_layers
from .models import get_model
from .perturbations import make_perturbation
from .training import TrainConfig, train_classifier

__all__ = [
    "PREPARERS",
    "prepare_dataset",
    "model_preprocess",
    "train_model",
    "baseline",
    "perturb_layer",
    "merge_tables",
]

log = logging.getLogger("netperturb")


def _prepare_digits(out_dir, options):
    return prepare_digits(
        out_dir,
        test_fraction=float(options.get("test_fraction", 0.3)),
        split_seed=int(options.get("split_seed", 0)),
    )


def _prepare_mnist(out_dir, options):
    if not options.get("root"):
        raise ValueError("datasets.mnist.root: the folder with the MNIST idx files is not set")
    return prepare_mnist(options["root"], out_dir, verify_checksums=bool(options.get("verify_checksums", True)))


#: Datasets prepared by the generic ``prepare_dataset`` rule: name -> f(out_dir, options).
PREPARERS = {"digits": _prepare_digits, "mnist": _prepare_mnist}


def prepare_dataset(name: str, out_dir: str | os.PathLike, options: Mapping[str, Any]) -> dict:
    """Decode dataset ``name`` into shards in ``out_dir`` (see :mod:`netperturb.data`) with
    the options of ``datasets.<name>`` in the config.

    Raises:
        ValueError: unknown dataset name or a missing required option (names the key).
    """
    try:
        preparer = PREPARERS[name]
    except KeyError:
        raise ValueError(f"dataset: no preparation for dataset {name!r}; known: {', '.join(PREPARERS)}") from None
    return preparer(out_dir, options)


def model_preprocess(manifest: Mapping[str, Any], arch: str, input_size: int | None = None) -> Preprocess:
    """The dataset's normalisation, resized to the model's input: ``input_size`` if given,
    else the registered architecture's own input size (LeNet-5: 32), else the dataset's."""
    from dataclasses import replace

    from .models import get_spec

    pre = Preprocess.from_dict(manifest["preprocess"])
    spec = get_spec(arch)
    size = input_size or (spec.input_size if spec is not None else None) or pre.size
    return replace(pre, size=size)


def train_model(
    shard_dir: str | os.PathLike,
    arch: str,
    train_cfg: Mapping[str, Any],
    checkpoint_out: str | os.PathLike,
    history_out: str | os.PathLike,
    *,
    model_name: str,
    study: str,
    input_size: int | None = None,
    device: str = "auto",
) -> pd.DataFrame:
    """Train ``arch`` on the shards' train split; write the checkpoint and a per-epoch CSV
    (``study, model, arch, epoch, lr, train_loss, test_top1, test_top5, test_loss``)."""
    manifest = read_manifest(shard_dir)
    preprocess = model_preprocess(manifest, arch, input_size)
    cfg = TrainConfig(**{k: train_cfg[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "seed", "max_shift") if k in train_cfg})
    dev = resolve_device(device)
    train = load_split(shard_dir, "train")
    test = load_split(shard_dir, "test")
    in_channels = int(train[0].shape[1])
    torch.manual_seed(cfg.seed)
    model = get_model(arch, num_classes=manifest["num_classes"], in_channels=in_channels).to(dev)
    history = train_classifier(model, train, test, preprocess, cfg)
    history.insert(0, "arch", arch)
    history.insert(0, "model", model_name)
    history.insert(0, "study", study)
    final = history.iloc[-1]
    save_checkpoint(
        checkpoint_out,
        model,
        arch=arch,
        num_classes=manifest["num_classes"],
        in_channels=in_channels,
        preprocess=preprocess,
        meta={
            "dataset": manifest["dataset"],
            "train": cfg.__dict__ | {"extra": None},
            "test_top1": float(final["test_top1"]),
            "test_top5": float(final["test_top5"]),
        },
    )
    write_csv(history, history_out)
    log.info("%s: test top-1 %.4f after %d epochs", model_name, final["test_top1"], cfg.epochs)
    return history


def baseline(
    checkpoint: str | os.PathLike,
    shard_dir: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    study: str,
    dataset: str,
    model_name: str,
    study_seed: int,
    split: str = "test",
    batch_size: int = 256,
    device: str = "auto",
) -> pd.DataFrame:
    """Evaluate the unperturbed model on ``split``; one row of :data:`~netperturb.grid.COLUMNS`."""
    loaded = load_checkpoint(checkpoint, resolve_device(device))
    images, labels = load_split(shard_dir, split)
    df = baseline_table(
        loaded, images, labels, study=study, dataset=dataset, model=model_name,
        study_seed=study_seed, batch_size=batch_size,
    )  # fmt: skip
    write_csv(df, out_csv)
    return df


def perturb_layer(
    checkpoint: str | os.PathLike,
    shard_dir: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    study: str,
    dataset: str,
    model_name: str,
    layer: str,
    perturbation: str,
    perturbation_options: Mapping[str, Any],
    levels: Sequence[float] | Mapping[str, float],
    repeats: int,
    study_seed: int,
    split: str = "test",
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """One perturbation job (model x layer x perturbation, all levels x repeats) -> CSV.

    Raises:
        LayerSelectionError: ``layer`` is not a Conv2d/Linear module path of the model.
        ValueError: unknown perturbation or option, or a level out of its range.
    """
    loaded = load_checkpoint(checkpoint, resolve_device(device))
    (info,) = select_layers(find_layers(loaded.model), [layer])
    options = {k: v for k, v in perturbation_options.items() if k != "levels"}
    job = LayerJob(
        study=study,
        dataset=dataset,
        model=model_name,
        layer=info,
        perturbation=make_perturbation(perturbation, **options),
        levels=expand_levels(levels, key=f"perturbation.perturbations.{perturbation}.levels"),
        repeats=int(repeats),
        study_seed=int(study_seed),
    )
    images, labels = load_split(shard_dir, split)
    df = run_layer_job(job, loaded, images, labels, batch_size=batch_size, progress=progress)
    write_csv(df, out_csv)
    return df


def merge_tables(
    inputs: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_parquet: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Concatenate per-job CSVs into one tidy table (CSV, and Parquet if asked), sorted by
    model, layer depth, perturbation, level, repeat.

    Raises:
        ValueError: no inputs, or an input lacks a column of :data:`COLUMNS` (names the file).
    """
    if not inputs:
        raise ValueError("merge: no input tables")
    frames = []
    for path in inputs:
        df = pd.read_csv(path, keep_default_na=False, na_values=["NaN", "nan"])
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        frames.append(df)
    merged = pd.concat(frames, ignore_index=True)
    merged = merged.sort_values(
        ["model", "layer_index", "perturbation", "level", "repeat"], kind="stable"
    ).reset_index(drop=True)
    write_csv(merged, out_csv)
    if out_parquet is not None:
        write_parquet(merged, out_parquet)
    return merged


def _prepare_cifar10(out_dir, options):
    from .data import prepare_cifar10

    if not options.get("root"):
        raise ValueError("datasets.cifar10.root: the folder with cifar-10-batches-py/ or cifar-10-python.tar.gz is not set")
    return prepare_cifar10(options["root"], out_dir, verify_checksums=bool(options.get("verify_checksums", True)))


def _prepare_tiny_imagenet(out_dir, options):
    from .data import prepare_tiny_imagenet

    if not options.get("root"):
        raise ValueError("datasets.tiny_imagenet.root: the tiny-imagenet-200 folder is not set")
    return prepare_tiny_imagenet(options["root"], out_dir, max_bad_fraction=float(options.get("max_bad_fraction", 0.0)))


# The datasets of Pravin et al. 2024 beyond MNIST.
PREPARERS.update({"cifar10": _prepare_cifar10, "tiny_imagenet": _prepare_tiny_imagenet})
