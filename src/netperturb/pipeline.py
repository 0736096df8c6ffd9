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

from .checkpoints import LoadedModel, load_model, save_checkpoint
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
    "prepare_imagenet_dataset",
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


def prepare_imagenet_dataset(
    out_dir: str | os.PathLike, options: Mapping[str, Any], transform: Mapping[str, Any], *, threads: int = 1
) -> dict:
    """The ImageNet validation shards for one transform (:func:`netperturb.imagenet.prepare_imagenet`)
    with the options of ``datasets.imagenet`` in the config.

    Raises:
        FileNotFoundError: a configured input does not exist (names the key and path).
        netperturb.imagenet.ImageNetError: see :func:`~netperturb.imagenet.prepare_imagenet`.
    """
    from .imagenet import prepare_imagenet

    val_dir = options.get("val_dir")
    for key in (("val_dir",) if val_dir else ("val_tar", "devkit")):
        if not options.get(key):
            raise ValueError(f"datasets.imagenet.{key}: not set")
        if not os.path.exists(options[key]):
            raise FileNotFoundError(
                f"datasets.imagenet.{key}: {options[key]} does not exist (see README, 'The paper configuration')"
            )
    devkit = options.get("devkit")
    if val_dir and devkit and not os.path.exists(devkit):
        devkit = None  # optional with val_dir: the folder names are the classes
    return prepare_imagenet(
        out_dir, transform, val_tar=None if val_dir else options["val_tar"], devkit=devkit, val_dir=val_dir,
        images_per_class=options.get("images_per_class"), shard_size=int(options.get("shard_size", 5000)),
        max_bad_fraction=float(options.get("max_bad_fraction", 0.001)), threads=threads,
        verify_checksums=bool(options.get("verify_checksums", True)),
    )  # fmt: skip


def _eval_data(shard_dir, split: str, loaded: LoadedModel, device: torch.device):
    """The evaluation split, checked against the model's input size, on ``device`` when it
    is a GPU with room for it (25% kept free), else in (pinned) host memory."""
    images, labels = load_split(shard_dir, split)
    spec = loaded.meta.get("transform")
    if spec is not None:
        crop = list(spec["crop_size"]) * (2 if len(spec["crop_size"]) == 1 else 1)
        if list(images.shape[-2:]) != crop:
            raise ValueError(f"{shard_dir}: images are {list(images.shape[-2:])}, {loaded.weights} expects {crop}")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if images.numel() + labels.numel() * 8 < 0.75 * free:
            return images.to(device), labels.to(device)
        return images.pin_memory(), labels.pin_memory()
    return images, labels


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
    model_source: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Evaluate the unperturbed model on ``split``; one row of :data:`~netperturb.grid.COLUMNS`.

    ``checkpoint`` is a netperturb checkpoint, or with ``model_source`` (pretrained
    torchvision weights, :func:`netperturb.weights.resolve_model_source`) the weights file."""
    dev = resolve_device(device)
    loaded = load_model(checkpoint, dev, model_source)
    images, labels = _eval_data(shard_dir, split, loaded, dev)
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
    model_source: Mapping[str, Any] | None = None,
    engine: str = "fast",
    precision: str = "fp32",
    max_replicas: int | None = None,
) -> pd.DataFrame:
    """One perturbation job (model x layer x perturbation, all levels x repeats) -> CSV.

    ``checkpoint`` is a netperturb checkpoint, or with ``model_source`` (pretrained
    torchvision weights, :func:`netperturb.weights.resolve_model_source`) the weights file.
    The evaluation images are kept on the GPU when there is room (else pinned host memory).
    ``engine``, ``precision`` and ``max_replicas`` are those of
    :func:`netperturb.grid.run_layer_job` (config ``perturbation.engine`` / ``.precision`` /
    ``.max_replicas``).

    Raises:
        LayerSelectionError: ``layer`` is not a Conv2d/Linear module path of the model.
        ValueError: unknown perturbation or option, or a level out of its range.
    """
    dev = resolve_device(device)
    loaded = load_model(checkpoint, dev, model_source)
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
    images, labels = _eval_data(shard_dir, split, loaded, dev)
    df = run_layer_job(
        job, loaded, images, labels, batch_size=batch_size, progress=progress,
        engine=engine, precision=precision, max_replicas=max_replicas,
    )  # fmt: skip
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
