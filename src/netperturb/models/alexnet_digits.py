"""An AlexNet-shaped network at digit scale: 5 conv + 3 dense layers.

The depth structure of Krizhevsky et al. 2012 (conv1..conv5 with pooling after conv1, conv2
and conv5; then fc6, fc7, fc8 with dropout), so that the layer-depth story of Cheney et al.
2017 can show on 32 x 32 inputs, with widths cut for a 2-core CPU. BatchNorm follows every
convolution (AlexNet's LRN is obsolete), which also exercises BN-aware node knockout.
"""

from torch import nn

from netperturb.models.registry import register_model


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class AlexNetDigits(nn.Module):
    """Input (B, in_channels, 32, 32) -> logits (B, num_classes).

    conv1 16@3x3, pool (16x16) | conv2 32@3x3, pool (8x8) | conv3 48 | conv4 48 | conv5 32,
    pool (4x4) | fc6 512->256 | fc7 256->256 | fc8 256->num_classes. Convs have no bias (BN
    follows); module paths features.0, .4, .8, .11, .14 and classifier.1, .4, .6.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.3):
        super().__init__()
        self.features = nn.Sequential(
            *_conv(in_channels, 16), nn.MaxPool2d(2),
            *_conv(16, 32), nn.MaxPool2d(2),
            *_conv(32, 48),
            *_conv(48, 48),
            *_conv(48, 32), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(32 * 4 * 4, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.flatten(1))


@register_model(
    "alexnet_digits",
    input_size=32,
    description="AlexNet-shaped 5 conv + 3 dense (Krizhevsky et al. 2012 layout), BN, digit scale",
)
def alexnet_digits(num_classes: int = 10, in_channels: int = 1) -> AlexNetDigits:
    return AlexNetDigits(num_classes=num_classes, in_channels=in_channels)
