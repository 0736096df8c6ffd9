"""netperturb: perturb the internal weights and architecture of neural networks and measure the damage.

Four studies, each regenerated end to end by the Snakemake workflow (``studies/<name>``):
``cheney2017`` (Cheney, Schrimpf, Kreiman 2017: per-layer synapse knockout, node knockout and
Gaussian weight noise), ``pravin2024`` (Pravin et al. 2024: synaptic filtering and
fragile / robust / antifragile parameters), ``shen2021`` (Shen, Chen, Wang 2021: the Min-Max
property of trained weights) and ``faults`` (hardware faults: bit flips, stuck-at bits,
weight and activation noise, with SDC and DUE).

**The public API** (``import netperturb as npt``; :mod:`netperturb.api`, loaded on first use
so that ``import netperturb`` stays light) works on any PyTorch classifier and any data
(a DataLoader, a Dataset or ``(x, y)`` tensors, streamed):

- :func:`layers` / :func:`layer_table`: every perturbable layer (path, label, kind, weight
  shape, parameter count);
- :func:`perturbed`: one cell's perturbation applied in place for a ``with`` block, restored
  bit for bit on exit, drawn exactly as the grid engine draws that cell's seed;
- :func:`evaluate` -> :class:`Metrics`: top-1, top-5, loss; SDC and DUE against a
  fault-free reference;
- :func:`run_grid`: layers x perturbations x levels x repeats with the workflow's engine,
  seeds and columns, as a pandas DataFrame; :func:`plot_grid` draws it;
- :func:`in_format`: the model stored in fp16 / bf16 / int8, the fault-free reference of a
  bit fault in that format; :func:`cell_seed`: the seed of one grid cell.

Reading order for the library underneath (``core`` imports nothing else of the package, and
no study imports another):

1. :mod:`netperturb.core`, what every study shares: ``layers`` (which layers exist and how
   they are named), ``seeds`` (how each grid cell gets its randomness), ``stream`` (evaluation
   data read in batches), ``evaluate`` (top-1 / top-5 / loss, SDC, DUE), ``attacks`` (FGSM,
   PGD; budgets in pixel units), ``training``, ``preprocess``, ``config``, ``io``, ``merge``,
   ``resume``, ``jobs`` and ``report``.
2. :mod:`netperturb.perturb`, what is done to a layer: ``base`` (the ``Perturbation``
   interface), ``knockouts``, ``noise``, ``filters``, ``faults``, ``registry``; then ``grid``
   (one job = one model x layer x perturbation) and ``engine`` (how a job is computed fast,
   and the naive reference).
3. :mod:`netperturb.datasets` (uint8 shards, one module per dataset) and
   :mod:`netperturb.models` (our small models, torchvision weights, checkpoints, loading).
4. :mod:`netperturb.studies`, one subpackage per study, none importing another:
   ``cheney2017`` (the knockout / noise grid), ``shen2021`` (the Min-Max property),
   ``pravin2024`` (synaptic filtering) and ``faults`` (hardware faults); each has its ``plan``
   (what the config asks for), ``jobs`` (what the workflow's rules run), ``figures`` (what its
   report notebook shows) and ``findings`` (the report's opening verdicts).
5. :mod:`netperturb.api`, the public API above, built on all of these but the studies.

The documentation (``make docs``) has a page per study, the configuration reference and the
design of the package.
"""

__version__ = "0.3.0"

#: The public API (:mod:`netperturb.api`), imported on first attribute access.
_API = (
    "layers", "layer_table", "perturbed", "Applied", "FormatError", "in_format", "evaluate", "Metrics", "run_grid",
    "plot_grid", "cell_seed",
)  # fmt: skip

__all__ = ["__version__", *_API]

def __getattr__(name: str):
    # Loaded on first use, by name: the package itself depends on none of its modules (they
    # all read ``netperturb.__version__`` from it), so importing it costs nothing.
    if name in _API:
        import importlib

        value = getattr(importlib.import_module("netperturb.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'netperturb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
