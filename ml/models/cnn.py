"""Convolutional networks of the USTC group's split-learning code, as split-able models.

- :class:`CNN` follows the group's EMNIST CNN (``ymliao98/AdaSFL`` ``EMNIST_CNN1/2``): two 5x5
  conv layers (32, 64 channels) with max-pooling, then fc 512 and the classifier; their split
  is after the second conv stage. ``cnn-small`` (ours) halves the channels (16, 32) and uses
  fc 128: 6 instead of 25 MFLOPs per 28x28 sample, for quick runs on CPU. Also ours: 3x3 kernels when the input is smaller than 16 pixels
  (sklearn's 8x8 digits), and the flatten size is computed from the input shape.
- :class:`AlexNet` follows ``AlexNet_DF1/DF2`` for 32x32 CIFAR: five 3x3 conv layers
  (64-192-384-256-256) with three max-pools, then a dropout MLP 4096-4096; the group splits
  after the conv features (stage ``conv5``).

ReLUs are not in-place, so a half can start from a detached leaf tensor (split learning). The
max-pools are :class:`ml.models.pooling.MaxPool2d`: torch's, computed faster on the CPU.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ml.models.base import SplittableModel
from ml.models.pooling import MaxPool2d


def _flat_size(stages: nn.Module, input_shape: tuple[int, int, int]) -> int:
    with torch.no_grad():
        return int(stages(torch.zeros(1, *input_shape)).numel())


class CNN(SplittableModel):
    """Two conv stages and two fully connected layers, for MNIST (28x28) and digits (8x8)."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int],
                 channels: tuple[int, int] = (32, 64), hidden: int = 512):
        in_ch, height, _ = input_shape
        k = 5 if height >= 16 else 3
        conv1 = nn.Sequential(nn.Conv2d(in_ch, channels[0], k, padding=k // 2), nn.ReLU(),
                              MaxPool2d(2))
        conv2 = nn.Sequential(nn.Conv2d(channels[0], channels[1], k, padding=k // 2), nn.ReLU(),
                              MaxPool2d(2))
        flat = _flat_size(nn.Sequential(conv1, conv2), input_shape)
        fc1 = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU())
        fc2 = nn.Linear(hidden, num_classes)
        super().__init__(OrderedDict(conv1=conv1, conv2=conv2, fc1=fc1, fc2=fc2),
                         default_split="conv2")


class AlexNet(SplittableModel):
    """AlexNet for 32x32 colour images, as in the group's CIFAR-10 split learning code."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int] = (3, 32, 32),
                 dropout: float = 0.5):
        in_ch = input_shape[0]

        def conv(cin: int, cout: int, pool: bool) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
            if pool:
                layers.append(MaxPool2d(2))
            return nn.Sequential(*layers)

        convs = OrderedDict(
            conv1=conv(in_ch, 64, True), conv2=conv(64, 192, True), conv3=conv(192, 384, False),
            conv4=conv(384, 256, False), conv5=conv(256, 256, True),
        )
        flat = _flat_size(nn.Sequential(*convs.values()), input_shape)
        stages = OrderedDict(
            **convs,
            fc1=nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, 4096), nn.ReLU()),
            fc2=nn.Sequential(nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU()),
            fc3=nn.Linear(4096, num_classes),
        )
        super().__init__(stages, default_split="conv5")
