"""The Spheres classifier of the gradient-direction study (SPEC 5, ricbl direct_method/classifier.py)."""
from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from advpipe.models.base import Classifier


class MLP(Classifier):
    """Flatten -> [Linear(h) -> ReLU -> BatchNorm1d] per hidden width = representation -> Linear(outputs).

    The original's order (ReLU before BN) and PyTorch's default initialisation. Input size
    D = prod(input_shape), 500 for the Spheres; without `input_shape`, images (in_channels, image_size, image_size).
    frozen_bn: BN layers stay in eval mode while training, as the original's direct method keeps them (its
    `train` override applies to the Sphere MLP too), so they act as a fixed affine map of learned scale and shift.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int | None = None,
                 input_shape: Sequence[int] | None = None, hidden: Sequence[int] = (1000, 1000),
                 batchnorm: bool = True, frozen_bn: bool = False, mean=None, std=None):
        super().__init__(in_channels, mean, std)
        if input_shape is None:
            if image_size is None:
                raise ValueError("mlp: needs input_shape (vectors) or image_size (images)")
            input_shape = (in_channels, image_size, image_size)
        width = math.prod(int(s) for s in input_shape)
        layers: list[nn.Module] = [nn.Flatten()]  # a no-op on (B, D) vectors; images are flattened
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()] + ([nn.BatchNorm1d(int(h))] if batchnorm else [])
            width = int(h)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)
        if frozen_bn:
            self.freeze_batchnorm()
