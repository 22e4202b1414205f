"""Small ResNets for 32x32 images, as split-able models.

- ``resnet8/20/32``: the CIFAR ResNets of He et al. (2016, sec. 4.2): a 3x3 stem with 16
  channels, three stages of ``n`` basic blocks (16, 32, 64 channels, stride 2 between stages),
  global average pooling and a linear classifier; depth 6n+2. ResNet-32 is the long-tailed
  CIFAR backbone of the IMB-NAS line of work.
- ``resnet18``: the 4-stage (64..512) ResNet-18 with a 3x3 stem for 32x32 inputs.

Split points are the stage names (``stem``, ``layer1`` ...); the default cut is after
``layer1`` (ours: a light bottom for edge workers).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from ml.models.base import SplittableModel


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(SplittableModel):
    """ResNet with basic blocks: ``blocks[i]`` blocks of ``widths[i]`` channels per stage."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int],
                 blocks: tuple[int, ...], widths: tuple[int, ...]):
        if len(blocks) != len(widths):
            raise ValueError("blocks and widths need one entry per stage")
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        stages["stem"] = nn.Sequential(
            nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]), nn.ReLU())
        cin = widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(cin, width, stride=2 if (i > 0 and j == 0) else 1))
                cin = width
            stages[f"layer{i + 1}"] = nn.Sequential(*layers)
        stages["head"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                       nn.Linear(cin, num_classes))
        super().__init__(stages, default_split="layer1")


def cifar_resnet(depth: int, num_classes: int, input_shape: tuple[int, int, int]) -> ResNet:
    """He et al.'s CIFAR ResNet of ``depth`` = 6n+2 layers (8, 20, 32, 44, 56 ...)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
    n = (depth - 2) // 6
    return ResNet(num_classes, input_shape, blocks=(n, n, n), widths=(16, 32, 64))


def resnet18(num_classes: int, input_shape: tuple[int, int, int]) -> ResNet:
    """ResNet-18 (2-2-2-2 basic blocks, 64..512 channels) with a 3x3 stem for small images."""
    return ResNet(num_classes, input_shape, blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512))
