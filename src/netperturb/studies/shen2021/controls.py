"""Controls of the Min-Max claim (Shen et al. 2021): what the fuzziness readings show for a
network that learned nothing.

A reading of "fuzziness falls over training" means something only if it does not also fall
for weights that merely diffuse, or for a network trained on noise. Two controls, with the
same optimiser, epochs and seeds as the trained run (issue: "findings that survive
controls"):

- **driftless walk** (:class:`DriftlessWalk`): the run's own per-step update of every tracked
  weight, ``delta_k = w_k - w_{k-1}``, applied with an independent random sign per weight and
  step: ``v_k = v_{k-1} + s_k * delta_k``, ``s_k = +-1`` with probability 1/2, ``v_0 = w_0``.
  The walk has exactly the step sizes of training (so the same spread growth and the same
  range of every weight) and no drift. It is tracked during the real run as a shadow copy of
  the tracked weights (float64; no extra forward or backward pass).
- **shuffled labels** (:func:`shuffled_labels`): the same network, initialisation, data order
  and optimiser trained on a fixed random permutation of the training labels: it fits noise
  (test accuracy at chance) while its weights still move by gradient steps.

Comparison (:func:`control_margins`): per reading, layer and training seed, the trained run's
final fuzziness against each control's at the same snapshot, paired by seed (every run of a
seed starts from the same initial weights): ``margin = F_end(control) - F_end(trained)``;
under the ``current`` and ``init_bound`` readings also the trained run's own fall
``F_0 - F_end(trained)``. The claim holds for a reading only when every margin of every conv
layer is above 0 by more than its interval (:mod:`netperturb.studies.shen2021.findings`).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from netperturb.core.layers import LayerInfo

__all__ = ["CONTROLS", "TRAINED", "WALK", "SHUFFLED", "DriftlessWalk", "shuffled_labels", "control_margins",
           "COMPARATORS"]  # fmt: skip

#: The value of the ``control`` column for the trained run itself, and for each control.
TRAINED = "none"
WALK = "driftless walk"
SHUFFLED = "shuffled labels"
CONTROLS = (WALK, SHUFFLED)
#: What a margin compares (column ``comparator`` of :func:`control_margins`).
COMPARATORS = ("own fall", WALK, SHUFFLED)


class DriftlessWalk:
    """A shadow copy of the tracked weights that takes the run's own update of every weight
    at every optimiser step with a random sign (module docstring).

    Quacks like the model for :func:`~netperturb.studies.shen2021.minmax.weight_stats` and
    :class:`~netperturb.studies.shen2021.intervals.RunningRange`: ``get_submodule(path).weight``
    is the walk's tensor of that layer (float64, on the CPU).

    Args:
        model: the network at initialisation (the walk starts at its weights).
        layers: the layers whose ``.weight`` is tracked.
        seed: seed of the CPU generator of the signs (the walk is reproducible for a seed).

    Attributes:
        steps: updates applied so far.
    """

    def __init__(self, model: nn.Module, layers: Sequence[LayerInfo], seed: int):
        self._walk: dict[str, Tensor] = {}
        self._prev: dict[str, Tensor] = {}
        for info in layers:
            w = model.get_submodule(info.path).weight.detach().cpu().double()
            self._walk[info.path] = w.clone()
            self._prev[info.path] = w.clone()
        self._gen = torch.Generator().manual_seed(int(seed))
        self.steps = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Take one step: the change of every tracked weight since the last call (or since
        initialisation), each with its own random sign."""
        for path, walk in self._walk.items():
            w = model.get_submodule(path).weight.detach().cpu().double()
            delta = w - self._prev[path]
            self._prev[path] = w
            sign = torch.randint(0, 2, delta.shape, generator=self._gen, dtype=torch.int8).bool()
            walk.add_(torch.where(sign, delta, -delta))
        self.steps += 1

    def get_submodule(self, path: str) -> SimpleNamespace:
        """``.weight``: the walk's current weights of the layer at ``path``."""
        return SimpleNamespace(weight=self._walk[path])


def shuffled_labels(labels: Tensor, seed: int) -> Tensor:
    """A fixed random permutation of the training labels (``torch.randperm`` from a CPU
    generator seeded with ``seed``): the class frequencies stay, every link between an image
    and its label is gone. (Zhang et al. 2017, "Understanding deep learning requires
    rethinking generalization", ICLR: networks fit such labels; their weights still move by
    gradient steps.)

    Args:
        labels: (N,) int64.

    Returns:
        (N,) int64, the same multiset of labels.
    """
    g = torch.Generator().manual_seed(int(seed))
    return labels[torch.randperm(len(labels), generator=g)]


def _final_and_start(track: pd.DataFrame, reading: str, scope: str) -> pd.DataFrame:
    """Per (control, train_seed, layer): fuzziness at the first and the last snapshot of
    the lambda = 0 rows of one reading and scope (kernel scope: mean over kernels)."""
    sub = track[(track["interval"] == reading) & (track["scope"] == scope)] if "interval" in track else track[track["scope"] == scope]
    sub = sub[sub["lam"] == 0]
    if "control" not in sub:
        sub = sub.assign(control=TRAINED)
    keys = ["control", "train_seed", "layer_index", "layer_label"]
    per = sub.groupby(keys + ["epoch"], sort=True)["fuzziness"].mean().reset_index()
    first = per[per["epoch"] == per["epoch"].min()].set_index(keys)["fuzziness"]
    last = per[per["epoch"] == per["epoch"].max()].set_index(keys)["fuzziness"]
    return pd.DataFrame({"F0": first, "Fend": last}).reset_index()


def control_margins(tracking: pd.DataFrame, reading: str, *, scope: str = "layer") -> pd.DataFrame:
    """The trained run's fall against each control, per lambda = 0 seed and layer, under one
    reading of the interval (module docstring).

    Args:
        tracking: the merged tracking table (``control`` column; rows without it are the
            trained runs only), every reading.
        reading: ``current``, ``init_bound`` or ``trajectory``.
        scope: ``layer`` or ``kernel``.

    Returns:
        One row per (layer, seed, comparator): ``interval, layer_index, layer_label,
        train_seed, comparator, F0, Fend_trained, Fend_control, margin`` with ``comparator``
        in :data:`COMPARATORS`: ``own fall`` (``margin = F0 - Fend_trained``; not under
        ``trajectory``, which has no position at initialisation), and each control present
        (``margin = Fend_control - Fend_trained``). A positive margin: the trained run ended
        less fuzzy than the comparator. Empty when the tracking has no lambda = 0 run.
    """
    cols = ["interval", "layer_index", "layer_label", "train_seed", "comparator", "F0", "Fend_trained", "Fend_control",
            "margin"]  # fmt: skip
    fs = _final_and_start(tracking, reading, scope)
    trained = fs[fs["control"] == TRAINED].set_index(["train_seed", "layer_index", "layer_label"])
    if trained.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (seed, idx, label), t in trained.iterrows():
        if reading != "trajectory" and np.isfinite(t["F0"]):
            rows.append({"layer_index": idx, "layer_label": label, "train_seed": seed, "comparator": "own fall",
                         "F0": t["F0"], "Fend_trained": t["Fend"], "Fend_control": t["F0"],
                         "margin": t["F0"] - t["Fend"]})  # fmt: skip
        for control in CONTROLS:
            c = fs[(fs["control"] == control) & (fs["train_seed"] == seed) & (fs["layer_index"] == idx)]
            if len(c):
                fc = float(c["Fend"].iloc[0])
                rows.append({"layer_index": idx, "layer_label": label, "train_seed": seed, "comparator": control,
                             "F0": t["F0"], "Fend_trained": t["Fend"], "Fend_control": fc,
                             "margin": fc - t["Fend"] if math.isfinite(fc) else math.nan})  # fmt: skip
    out = pd.DataFrame(rows, columns=cols[1:])
    out.insert(0, "interval", reading)
    return out[cols].sort_values(["layer_index", "comparator", "train_seed"], kind="stable").reset_index(drop=True)
