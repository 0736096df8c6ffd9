"""Attack budgets of the Pravin et al. 2024 study: the authors' numbers, pixel units, our input units.

The authors' FGSM (``fgsm_attack`` in ``Synaptic_filtering.ipynb``, SynapFilter/InferLink) adds
``eps * sign(grad)`` to the images *as their loaders deliver them*, so their eps is in their
own normalised input space: ``ToTensor()`` (pixels in [0, 1]) then ``Normalize(mean, std)``.
One eps in their units is ``eps * std_c`` of the pixel range [0, 1] in channel ``c``. Their
loaders (``loadDataset`` / ``loadImageNetTiny``):

==============  ============================================  ===============================
dataset         their normalisation                           1 unit of their eps, in pixels
==============  ============================================  ===============================
MNIST           ``Normalize((0.1307,), (0.3081,))``           0.3081
CIFAR-10        ``Normalize((0.5,) * 3, (0.5,) * 3)``         0.5
Tiny ImageNet   none (``ImageNetTiny(..., transform=None)``)  1 (pixels assumed in [0, 1])
==============  ============================================  ===============================

The config gives budgets in **pixel units** (a fraction of the [0, 1] pixel range, the same
perturbation whatever a dataset's normalisation); :func:`authors_eps_to_pixel` converts the
authors' numbers (config/pravin2024-mnist.yaml lists each conversion), and the
attacks (:mod:`netperturb.core.attacks`, which take pixel units) convert a pixel budget into the
units of *our* normalised inputs, per channel (:func:`netperturb.core.attacks.input_eps`,
re-exported here): ``eps_pixel / std_c`` with ``std_c`` our :class:`~netperturb.core.preprocess.Preprocess`
std (the training split's own, e.g. about 0.25 per channel on CIFAR-10, so the authors'
CIFAR-10 0.015 -> 0.0075 pixels -> about 0.03 of our input units).

The Tiny ImageNet loader reads a pickle made by a script that is not in the repository; its
scale is assumed to be [0, 1] (*chosen*; were it 0..255, their 0.5 would be 0.5 / 255 pixels).
"""

from __future__ import annotations

from netperturb.core.attacks import input_eps

__all__ = ["AUTHORS_STD", "authors_eps_to_pixel", "input_eps"]

#: Per-dataset std of the authors' input normalisation (one value for every channel): one unit
#: of their eps in pixel units.
AUTHORS_STD = {"mnist": 0.3081, "cifar10": 0.5, "tiny_imagenet": 1.0}


def authors_eps_to_pixel(eps: float, dataset: str) -> float:
    """The authors' eps (their normalised input units) in pixel units: ``eps * AUTHORS_STD[dataset]``.

    Raises:
        ValueError: a dataset the authors did not use (names the known ones) or eps < 0.
    """
    if dataset not in AUTHORS_STD:
        raise ValueError(f"no authors' normalisation for dataset {dataset!r}; known: {', '.join(AUTHORS_STD)}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return float(eps) * AUTHORS_STD[dataset]
