"""netperturb: perturb the internal weights and architecture of neural networks and measure the damage.

Synapse and node knockout, Gaussian weight noise, synaptic filters and hardware faults (bit
flips and stuck-at bits in fp32 / fp16 / bf16 / int8 weights, multiplicative noise, activation
faults), layer by layer, with top-1 / top-5, loss and the resilience metrics SDC and DUE; and
the four studies built on them: ``cheney2017`` (Cheney et al. 2017), ``pravin2024`` (Pravin et
al. 2024), ``shen2021`` (Shen et al. 2021) and ``faults`` (hardware faults).

Reading order for a newcomer (``core`` imports nothing else of the package, and no study
imports another):

1. :mod:`netperturb.core`, what every study shares: ``layers`` (which layers exist and how
   they are named), ``seeds`` (how each grid cell gets its randomness), ``evaluate`` (top-1 /
   top-5 / loss, SDC / DUE), ``attacks`` (FGSM, PGD), ``training``, ``preprocess``, ``config``,
   ``io``, ``merge``, ``resume``, ``jobs`` and ``report``.
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

The documentation (``make docs``) has a page per study, the configuration reference and the
design of the package.
"""

__version__ = "0.2.0"

__all__ = ["__version__"]
