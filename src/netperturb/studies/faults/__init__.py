"""Hardware faults: bit flips and stuck-at bits in fp32 / fp16 / bf16 / int8-quantized weights,
multiplicative weight noise and activation faults, per layer against the fault rate, with the
resilience metrics (SDC, DUE). Plan: :mod:`.plan`; jobs: :mod:`.jobs`; figures: :mod:`.figures`;
findings: :mod:`.findings`. The fault models themselves are :mod:`netperturb.perturb.faults`."""
