"""A small CNN for small grey or colour images (the default model on scikit-learn's 8x8 digits)."""
from __future__ import annotations

from torch import nn

from advpipe.models.base import Classifier


class SmallCNN(Classifier):
    """conv(c1)-ReLU-conv(c2)-ReLU-maxpool2 -> flatten -> linear(hidden)-ReLU = representation -> linear."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int,
                 channels: tuple[int, int] = (32, 64), hidden: int = 128, mean=None, std=None):
        super().__init__(in_channels, mean, std)
        c1, c2 = channels
        side = image_size // 2
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(c2 * side * side, hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_classes)
