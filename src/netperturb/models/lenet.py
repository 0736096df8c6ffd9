"""LeNet-5 for 32 x 32 single-channel input.

LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to document
recognition", Fig. 2: C1 conv 6@5x5 -> S2 pool -> C3 conv 16@5x5 -> S4 pool -> C5/F dense 120
-> F6 dense 84 -> output 10. Modern choices here, as in most re-implementations: ReLU
instead of the scaled tanh, 2x2 max pooling instead of trainable sub-sampling, full C3
connectivity, a plain linear output instead of RBF units.

The 8 x 8 digits reach the 32 x 32 input by bilinear up-sampling (x4) in the on-device
preprocessing (:func:`netperturb.datasets.digits.prepare_digits`), not by padding.
"""

from torch import nn

from netperturb.models.registry import register_model


class LeNet5(nn.Module):
    """Input (B, in_channels, 32, 32) -> logits (B, num_classes).

    Layers (module path, label): features.0 conv1, features.3 conv2, classifier.0 fc3,
    classifier.2 fc4, classifier.4 fc5.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),  # 32 -> 28
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(6, 16, kernel_size=5),  # 14 -> 10
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 10 -> 5
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.flatten(1))


@register_model("lenet5", input_size=32, description="LeNet-5 (LeCun et al. 1998), ReLU + max-pool")
def lenet5(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    return LeNet5(num_classes=num_classes, in_channels=in_channels)
