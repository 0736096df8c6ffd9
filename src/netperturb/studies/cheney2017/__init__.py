"""Cheney, Schrimpf, Kreiman 2017 (arXiv 1703.08245): per-layer synapse knockout, node
knockout and Gaussian weight noise; top-1 / top-5 against level. Plan: :mod:`.plan`; jobs:
:mod:`.jobs`; figures: :mod:`.figures`. The perturbations themselves are :mod:`netperturb.perturb`."""
