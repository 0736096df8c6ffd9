"""Shen, Chen, Wang 2021 (arXiv 2011.13719): the Min-Max property of conv weights over
training and its link to adversarial robustness. Definitions: :mod:`.minmax`; plan:
:mod:`.plan`; jobs: :mod:`.jobs`; figures: :mod:`.figures`."""
