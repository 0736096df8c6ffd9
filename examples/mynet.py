"""A user's own classifier, as a researcher would have it: a plain ``nn.Module`` in a file of
their own, built by a factory function. netperturb's worked example ("Your own model and data")
perturbs it from a config (``models.<name>.source: python``, ``factory: examples.mynet:make_mynet``)
and from a notebook through the public API.

Input: float images (B, in_channels, H, W), any H, W >= 4; output: logits (B, num_classes).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MyNet", "make_mynet"]


class MyNet(nn.Module):
    """Two convolutions (the first followed by a BatchNorm) and two dense layers."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def make_mynet(num_classes: int = 10, in_channels: int = 1) -> MyNet:
    """A freshly initialised :class:`MyNet` (load your ``state_dict`` into it)."""
    return MyNet(num_classes=num_classes, in_channels=in_channels)
