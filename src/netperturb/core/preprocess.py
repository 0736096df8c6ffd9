"""On-device preprocessing of uint8 images: scale to [0, 1], resize, mean/std normalisation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Preprocess"]


@dataclass(frozen=True)
class Preprocess:
    """uint8 images -> normalised float input, on the images' device.

    ``x = ((resize(u8 * scale)) - mean) / std`` per channel.

    Attributes:
        scale: multiplies the uint8 values (1/255 for 8-bit images, 1/16 for the 0..16
            digits).
        mean, std: per-channel normalisation (length C, or 1 to broadcast).
        size: if set, bilinearly resize to ``size x size`` (align_corners=False,
            antialias off) before normalising; ``None`` keeps the stored size.
    """

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int | None = None

    def __call__(self, images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Args: images uint8 (B, C, H, W). Returns dtype (B, C, size, size) on the same device."""
        x = images.to(dtype) * self.scale
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mean = torch.tensor(self.mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        return cls(
            scale=float(d["scale"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            size=None if d.get("size") is None else int(d["size"]),
        )
