"""Perturbations and the grid engine.

- :mod:`.base`: the :class:`~.base.Perturbation` interface and the exact k-subset sampler;
- families: :mod:`.knockouts` (synapse / node knockout), :mod:`.noise` (Gaussian weight
  noise), :mod:`.filters` (synaptic filters), :mod:`.faults` (hardware fault models: bit flips,
  stuck-at bits, multiplicative noise, activation faults);
- :mod:`.registry`: every perturbation by name (``make_perturbation``);
- :mod:`.grid`: one job = one model x layer x perturbation, every level x repeat;
- :mod:`.engine`: how a job is computed fast (graph split, batched replicas), and the naive
  reference.
"""

from netperturb.perturb.base import Perturbation, n_chosen
from netperturb.perturb.registry import PERTURBATIONS, make_perturbation

__all__ = ["Perturbation", "n_chosen", "PERTURBATIONS", "make_perturbation"]
