"""Pravin, Martino, Nicosia, Ojha 2024 (arXiv 2312.09821): synaptic filtering, filtering
scores (fragile / robust / antifragile) on clean and adversarial data, selective retraining.
Evaluation of a filtered network: :mod:`.evaluator`; sweeps: :mod:`.sweeps` (clean-prefix
reuse: :mod:`.prefix`); scores: :mod:`.scores`; plan: :mod:`.plan`; jobs: :mod:`.jobs`;
figures: :mod:`.figures`. The filters themselves are :mod:`netperturb.perturb.filters`."""
