"""A plain, hand-written PyTorch MobileNet v1 (the usual nn.Sequential of conv-BN-ReLU), the
reference archc's torch models are timed and counted against.

Stock layers only, symmetric ``padding=1`` (the common PyTorch port; TF "same" puts the stride-2
pad at bottom/right instead, same shapes and same cost). Parameters equal the PyTorch count of
timm's mobilenetv1_100 and archc's specs/mobilenet.yaml: 4,231,976.
"""

from __future__ import annotations

from torch import nn

# (output channels, stride) of the 13 depthwise-separable blocks: Howard et al. 2017, Table 1.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1))


def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    pad = kernel // 2
    return [nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def mobilenet_v1(classes: int = 1000, width: float = 1.0) -> nn.Sequential:
    """MobileNet v1 at width multiplier ``width`` (channels truncated, as Keras does)."""
    c = int(32 * width)
    layers = conv_bn(3, c, 3, 2)
    for filters, stride in BLOCKS:
        out = int(filters * width)
        layers += conv_bn(c, c, 3, stride, groups=c) + conv_bn(c, out, 1, 1)
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes), nn.Softmax(dim=1)]
    return nn.Sequential(*layers)
