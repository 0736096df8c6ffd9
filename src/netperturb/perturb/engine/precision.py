"""Precision of the engine: fp32 (the reference, TF32 off) or autocast bf16 / fp16
(the Design page of the docs, "The engine" 6)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

__all__ = ["PRECISIONS", "check_precision", "precision_context"]


#: Precision name -> autocast dtype (None: plain fp32, the reference).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision``.

    Raises:
        ValueError: unknown precision (the message lists the known ones).
    """
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ValueError(f"precision {precision!r} unknown; known: {', '.join(PRECISIONS)}") from None


class _StrictFp32:
    """TF32 off for cuBLAS and cuDNN inside the block (restored after; re-enterable): on
    Ampere and later GPUs cuDNN convolutions default to TF32 (10-bit mantissa), not fp32."""

    def __enter__(self):
        self._saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        return self

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved
        return False


def precision_context(device: torch.device, precision: str):
    """``torch.autocast`` for ``"bf16"``/``"fp16"`` on ``device``. For ``"fp32"`` on a GPU,
    TF32 is switched off in the block so that ``fp32`` means fp32 arithmetic; on the CPU a no-op."""
    dtype = check_precision(precision)
    if dtype is None:
        return _StrictFp32() if device.type == "cuda" else nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _channels_last(device: torch.device, precision: str) -> bool:
    return device.type == "cuda" and precision != "fp32"
