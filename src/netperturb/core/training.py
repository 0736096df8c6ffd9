"""Seeded training of a classifier on in-memory uint8 data.

Used for the networks trained here (LeNet-5 and the digit-scale AlexNet on digits) and by
the later studies: hooks let a caller record weights during training (Min-Max study), save
checkpoints every k epochs (synaptic filtering study) or add a differentiable regulariser
to the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm  # plain tqdm: tqdm.auto in a notebook kernel warns (IProgress) without ipywidgets

from netperturb.core.evaluate import evaluate
from netperturb.core.preprocess import Preprocess

__all__ = ["SCHEDULES", "TrainConfig", "train_classifier"]


@dataclass
class TrainConfig:
    """Hyper-parameters of Adam training (AdamW; with ``weight_decay`` 0 it is plain Adam).

    Attributes:
        epochs: passes over the training split (>= 1).
        batch_size: images per step.
        lr: learning rate (at the start, for ``cosine``).
        weight_decay: weight decay: decoupled (AdamW) with ``adamw``, L2 added to the
            gradient with ``sgd`` (``torch.optim.SGD``'s own).
        optimizer: ``adamw`` (``torch.optim.AdamW``; with weight_decay 0 this is Adam) or
            ``sgd`` (``torch.optim.SGD``, no momentum unless ``momentum`` > 0, no Nesterov:
            plain stochastic gradient descent).
        momentum: SGD momentum (only with ``sgd``; 0 = plain SGD).
        schedule: ``cosine`` (``lr`` annealed to 0 over ``epochs``, per step) or ``constant``
            (``lr`` throughout, as Pravin et al.'s trainer notebook: Adam 1e-3, batches of 100).
        seed: seeds initialisation order, shuffling and dropout.
        max_shift: random translation augmentation in input pixels (0 = none).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    max_shift: int = 0
    optimizer: str = "adamw"
    momentum: float = 0.0
    schedule: str = "cosine"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train schedule {self.schedule!r} not in {SCHEDULES}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any], **override: Any) -> "TrainConfig":
        """The hyper-parameters of a config's ``train:`` block (keys :data:`TRAIN_KEYS`;
        others, e.g. a study's own, are ignored), with ``override`` on top."""
        return cls(**{**{k: cfg[k] for k in TRAIN_KEYS if k in cfg}, **override})


#: The keys of a config's ``train:`` block that :class:`TrainConfig` takes (config/schema.yaml,
#: definitions/train), and ``schedule``, which the pravin2024 study sets study-wide
#: (``pravin2024.schedule``; the workflow adds it to each model's block).
TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "seed", "max_shift", "optimizer", "momentum", "schedule")

#: Optimisers :class:`TrainConfig` knows.
OPTIMIZERS = ("adamw", "sgd")

#: Learning-rate schedules of :class:`TrainConfig`.
SCHEDULES = ("cosine", "constant")


StepHook = Callable[[int, int, nn.Module], None]
EpochHook = Callable[[int, nn.Module, dict], None]


def _shift(x: Tensor, max_shift: int, g: torch.Generator) -> Tensor:
    if max_shift <= 0:
        return x
    dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=g))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def train_classifier(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    preprocess: Preprocess,
    cfg: TrainConfig,
    *,
    regularizer: Callable[[nn.Module], Tensor] | None = None,
    on_step: StepHook | None = None,
    on_epoch_end: EpochHook | None = None,
    progress: bool = True,
    frozen_modules: Sequence[nn.Module] = (),
) -> pd.DataFrame:
    """Train ``model`` in place with cross-entropy (+ ``regularizer(model)`` if given).

    Args:
        model: freshly initialised network on its device. Its initialisation is *not*
            redone here: seed before building it if it must be reproducible.
        train, test: (images uint8 (N, C, H, W), labels int64 (N,)) on the CPU.
        preprocess: uint8 -> input transform, applied on the model's device.
        cfg: :class:`TrainConfig`.
        regularizer: differentiable scalar added to the mean cross-entropy each step.
        on_step: called after every optimiser step as ``on_step(epoch, step, model)``
            (epoch 1-based, step 1-based within the epoch).
        on_epoch_end: called as ``on_epoch_end(epoch, model, metrics)`` after the test
            evaluation of each epoch; epoch 0 is the initialisation.
        frozen_modules: modules kept in ``eval()`` mode while training (a frozen BatchNorm
            keeps its running statistics). Only parameters with ``requires_grad`` are given
            to the optimiser, so frozen parameters stay bit-for-bit unchanged (selective
            retraining, :mod:`netperturb.studies.pravin2024.scores`).

    Returns:
        One row per epoch (0 = before training): ``epoch, lr, train_loss, test_top1,
        test_top5, test_loss``.

    Raises:
        ValueError: ``cfg.epochs < 1``, an empty training split, no parameter with
            ``requires_grad``, or an unknown ``cfg.optimizer``.
    """
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg.epochs}")
    x_train, y_train = train
    if len(y_train) == 0:
        raise ValueError("empty training split")
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(int(cfg.seed))
    torch.manual_seed(int(cfg.seed))  # dropout
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("no parameter of the model requires grad: nothing to train")
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    steps_per_epoch = math.ceil(len(y_train) / cfg.batch_size)
    if cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    else:
        sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)

    def test_metrics() -> dict:
        model.eval()
        m = evaluate(model, *test, preprocess, batch_size=1024).metrics()
        return {"test_top1": m["top1"], "test_top5": m["top5"], "test_loss": m["loss"]}

    rows = [{"epoch": 0, "lr": cfg.lr, "train_loss": math.nan, **test_metrics()}]
    if on_epoch_end is not None:
        on_epoch_end(0, model, rows[-1])
    bar = tqdm(range(1, cfg.epochs + 1), desc="train", disable=not progress, mininterval=2)
    for epoch in bar:
        model.train()
        for module in frozen_modules:
            module.eval()
        order = torch.randperm(len(y_train), generator=g)
        loss_sum, seen = 0.0, 0
        for step, start in enumerate(range(0, len(order), cfg.batch_size), start=1):
            idx = order[start : start + cfg.batch_size]
            x = _shift(preprocess(x_train[idx].to(device)), cfg.max_shift, g)
            y = y_train[idx].to(device)
            loss = F.cross_entropy(model(x), y)
            total = loss + regularizer(model) if regularizer is not None else loss
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
            if on_step is not None:
                on_step(epoch, step, model)
        row = {"epoch": epoch, "lr": sched.get_last_lr()[0], "train_loss": loss_sum / seen, **test_metrics()}
        rows.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", top1=f"{row['test_top1']:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, model, row)
    model.eval()
    return pd.DataFrame(rows)
