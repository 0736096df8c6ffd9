"""netperturb: perturb the internal weights and architecture of CNNs and measure the damage.

Reading order for a newcomer: ``perturbations`` (what is done to a layer), ``layers`` (which
layers exist and how they are named), ``seeds`` (how each grid cell gets its randomness),
``evaluate`` (top-1 / top-5 / loss), ``grid`` (one job = one model x layer x perturbation),
``engine`` (how a job is computed fast, and the naive reference), then ``data``, ``models``,
``training`` and ``report``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
