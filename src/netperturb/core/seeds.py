"""One seed per grid cell, from a stable hash.

The Design page of the docs, "Seeds and draws": each (model, layer, perturbation, level, repeat) has its own seed,
derived by a stable hash of those fields and the study seed, and its own CPU
``torch.Generator``. Results therefore do not depend on job order, job split, batch size or
device. Python's ``hash`` is salted per process, so it is not used; sha256 of a canonical
string is.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["canonical_level", "cell_seed", "cell_generator"]


def canonical_level(level: float) -> str:
    """The level as it enters the hash: rounded to 10 decimals, so 0.30000000000000004 == 0.3.

    Raises:
        ValueError: if ``level`` is not finite.
    """
    level = float(level)
    if level != level or level in (float("inf"), float("-inf")):
        raise ValueError(f"level must be finite, got {level!r}")
    text = f"{round(level, 10):.10f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def cell_seed(
    study_seed: int, model: str, layer: str, perturbation: str, level: float, repeat: int
) -> int:
    """Seed of one grid cell: the first 63 bits of sha256 over the cell's fields.

    Args:
        study_seed: the config's ``seed``.
        model: model name as in the config (e.g. ``"lenet5"``).
        layer: module path (e.g. ``"features.0"``).
        perturbation: perturbation name (e.g. ``"synapse_knockout"``).
        level: perturbation level (rounded to 10 decimals before hashing).
        repeat: repeat index, 0-based.

    Returns:
        An int in [0, 2**63), valid for ``torch.Generator.manual_seed``.
    """
    key = "\x1f".join(
        [str(int(study_seed)), model, layer, perturbation, canonical_level(level), str(int(repeat))]
    )
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def cell_generator(seed: int) -> torch.Generator:
    """A fresh CPU generator seeded with ``seed`` (masks and noise are drawn on the CPU so
    that the numbers do not depend on the device the network runs on)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g
