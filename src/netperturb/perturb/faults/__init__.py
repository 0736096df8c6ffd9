"""Hardware fault models (the Hardware faults page of the docs): bit flips and stuck-at bits in stored weights
(fp32 / fp16 / bf16 / int8-quantized), multiplicative weight noise, and faults in a layer's
output activations (transient or permanent).

- :mod:`.bits`: formats, bit positions, int8 quantization, exact bit selection;
- :mod:`.weights`: ``bit_flip``, ``stuck_at``, ``multiplicative_noise``, :func:`~.weights.format_model`;
- :mod:`.activations`: ``activation_bit_flip``, ``activation_stuck_at``, ``activation_noise``.
"""

from netperturb.perturb.faults.activations import ACTIVATION_FAULTS, ActivationFault, is_activation_fault
from netperturb.perturb.faults.bits import FORMATS, bit_positions, quantize_int8, to_format
from netperturb.perturb.faults.weights import WEIGHT_FAULTS, BitFlip, MultiplicativeNoise, StuckAt, format_model

FAULTS = {**WEIGHT_FAULTS, **ACTIVATION_FAULTS}

__all__ = [
    "FAULTS", "WEIGHT_FAULTS", "ACTIVATION_FAULTS", "ActivationFault", "is_activation_fault", "FORMATS",
    "bit_positions", "quantize_int8", "to_format", "BitFlip", "StuckAt", "MultiplicativeNoise", "format_model",
]  # fmt: skip
