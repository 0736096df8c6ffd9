"""Models: our small models by name (registered like torchvision's), torchvision look-up,
pretrained weights, checkpoints, and what a job needs to run a model.

- :mod:`~netperturb.models.registry`: ``get_model(arch)`` and the registry; importing this
  package registers LeNet-5 (:mod:`~netperturb.models.lenet`) and the digit-scale AlexNet
  (:mod:`~netperturb.models.alexnet_digits`).
- :mod:`~netperturb.models.weights`: torchvision weights by name, checked download.
- :mod:`~netperturb.models.checkpoints`: our checkpoint format, ``load_model`` for both.
- :mod:`~netperturb.models.select`: the layers of a configured model.
"""

from netperturb.models import alexnet_digits as _alexnet_digits  # noqa: F401  (registers alexnet_digits)
from netperturb.models import lenet as _lenet  # noqa: F401  (registers lenet5)
from netperturb.models.registry import (
    ModelSpec,
    adapt_first_conv,
    build_meta,
    get_model,
    get_spec,
    list_models,
    register_model,
)

__all__ = ["ModelSpec", "register_model", "get_model", "get_spec", "list_models", "build_meta", "adapt_first_conv"]
