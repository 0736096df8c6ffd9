"""The public API: perturb any PyTorch classifier on any data, from a notebook or a script.

Every name here is also at the package top level (``import netperturb as npt``; loaded on
first use, so ``import netperturb`` stays light):

- :func:`~netperturb.layers` / :func:`~netperturb.layer_table`: every perturbable layer (path, label, kind, weight
  shape, parameter count);
- :func:`~netperturb.perturbed`: one grid cell's perturbation applied to the model in place for a
  ``with`` block, restored bit for bit on exit (the draw of the grid engine for that seed);
- :func:`~netperturb.evaluate` -> :class:`~netperturb.Metrics`: top-1 / top-5 / loss, and SDC / DUE against a
  fault-free reference;
- :func:`~netperturb.run_grid`: a whole layers x perturbations x levels x repeats grid with the
  workflow's engine, seeds and columns, as a pandas DataFrame;
- :func:`~netperturb.in_format`: the model stored in fp16 / bf16 / int8 (the fault-free reference of a
  bit fault in that format); :func:`~netperturb.cell_seed`: the workflow's seed of a cell;
- :func:`~netperturb.plot_grid`: the figure of a grid table.

Data everywhere is a ``torch.utils.data.DataLoader``, a ``Dataset`` or ``(x, y)`` tensors,
read batch by batch (:mod:`netperturb.core.stream`).
"""

from netperturb.api.context import Applied, FormatError, in_format, perturbed
from netperturb.api.figures import plot_grid
from netperturb.api.grid import run_grid
from netperturb.api.inventory import layer_table, layers
from netperturb.api.metrics import Metrics, evaluate
from netperturb.core.seeds import cell_seed

__all__ = [
    "layers", "layer_table", "perturbed", "Applied", "FormatError", "in_format", "evaluate", "Metrics", "run_grid",
    "plot_grid", "cell_seed",
]  # fmt: skip
