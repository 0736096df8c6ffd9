"""Shared fixtures: small networks, digits shards, a trained-enough checkpoint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]


SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def run_snakemake(workdir: Path, *args: str, config: str = "tiny.yaml", check: bool = True) -> subprocess.CompletedProcess:
    """Run this repository's workflow in ``workdir`` with ``--configfile config`` on 2 cores;
    with ``check``, a non-zero exit raises AssertionError with the ends of stdout / stderr."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--configfile", config, "--cores", "2", *args]
    r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    return r


def job_counts(output: str) -> dict[str, int]:
    """rule -> job count from the "Job stats:" table of Snakemake's output."""
    block = output.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}

# keep the tests' torch to few threads: CI has 2 cores and runs snakemake jobs beside pytest, and
# `make test` runs two pytest processes (pytest-xdist sets PYTEST_XDIST_WORKER_COUNT in each)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))


def engine_test_device() -> torch.device:
    """The device the engine tests (tests/perturb/test_engine.py) put their models on:
    ``NETPERTURB_TEST_DEVICE`` (``cpu`` when unset; ``cuda``, ``cuda:1`` or ``auto`` on a
    GPU machine, as bench/gpu.sh sets it). No test needs a GPU: unset, everything runs on
    the CPU.

    Raises:
        RuntimeError: a CUDA device was asked for and none is available (the tests then fail
            to collect instead of quietly running on the CPU).
    """
    from netperturb.core.evaluate import resolve_device

    return resolve_device(os.environ.get("NETPERTURB_TEST_DEVICE") or "cpu")


class ConvBNNet(nn.Module):
    """conv(bias) -> BN -> ReLU -> conv(no bias) -> BN -> ReLU -> pool -> linear -> linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running stats and affine terms."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture
def convbn() -> nn.Module:
    torch.manual_seed(0)
    return randomise_bn(ConvBNNet()).eval()


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory) -> Path:
    from netperturb.datasets.digits import prepare_digits

    out = tmp_path_factory.mktemp("digits") / "shards"
    prepare_digits(out)
    return out


@pytest.fixture(scope="session")
def lenet_checkpoint(tmp_path_factory, digits_shards) -> Path:
    """LeNet-5 trained for 2 epochs on digits (well above chance, quick)."""
    from netperturb.models.train import train_model

    d = tmp_path_factory.mktemp("lenet")
    train_model(
        digits_shards, "lenet5", {"epochs": 2, "seed": 0}, d / "lenet5.pt", d / "lenet5.csv",
        model_name="lenet5", study="test",
    )  # fmt: skip
    return d / "lenet5.pt"
