"""netperturb: perturb the internal weights and architecture of CNNs and measure the damage.

Reading order for a newcomer (``core`` imports nothing else of the package, and no study
imports another):

1. :mod:`netperturb.core`, what every study shares: ``layers`` (which layers exist and how
   they are named), ``seeds`` (how each grid cell gets its randomness), ``evaluate`` (top-1 /
   top-5 / loss), ``attacks`` (FGSM, PGD), ``training``, ``preprocess``, ``config``, ``io``,
   ``merge``, ``jobs`` and ``report``.
2. :mod:`netperturb.perturb`, what is done to a layer: ``base`` (the ``Perturbation``
   interface), ``knockouts``, ``noise``, ``filters``, ``registry``; then ``grid`` (one job =
   one model x layer x perturbation) and ``engine`` (how a job is computed fast, and the naive
   reference).
3. :mod:`netperturb.datasets` (uint8 shards, one module per dataset) and
   :mod:`netperturb.models` (our small models, torchvision weights, checkpoints, loading).
4. :mod:`netperturb.studies`, one subpackage per paper, none importing another:
   ``cheney2017`` (the knockout / noise grid), ``shen2021`` (the Min-Max property) and
   ``pravin2024`` (synaptic filtering); each has its ``plan`` (what the config asks for),
   ``jobs`` (what the workflow's rules run) and ``figures`` (what its report notebook shows).
"""

__version__ = "0.3.0"

__all__ = ["__version__"]
