"""Train one configured model on a dataset's training split and save it (rule ``train``; the models shared by studies)."""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import pandas as pd
import torch

from netperturb.core.evaluate import resolve_device
from netperturb.core.io import write_csv
from netperturb.core.training import TrainConfig, train_classifier
from netperturb.datasets.shards import load_split, read_manifest
from netperturb.models import get_model
from netperturb.models.checkpoints import save_checkpoint
from netperturb.models.loading import model_preprocess

log = logging.getLogger("netperturb")

__all__ = ["train_model"]


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
    cfg = TrainConfig.from_mapping(train_cfg)
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
