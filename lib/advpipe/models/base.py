"""The Classifier interface: inputs in [0,1], normalisation inside, scores and representation in one pass."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Classifier(nn.Module):
    """A network split into `body` (normalised input -> representation) and `head` (representation -> scores).

    Subclasses build `self.body` and `self.head`; the representation is the vector before the final
    linear layer (SPEC 1), returned by `forward_features` from the same forward pass as the scores.
    """

    def __init__(self, in_channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        mean = [0.0] * in_channels if mean is None else list(mean)
        std = [1.0] * in_channels if std is None else list(std)
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"normalisation mean/std need {in_channels} values, got {mean} / {std}")
        # Buffers, so they travel with the state_dict and the device.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.body: nn.Module
        self.head: nn.Module

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward_normalized(self, z: torch.Tensor) -> torch.Tensor:
        """Raw output from an already normalised input: the logits here; a label-space prediction for models whose
        head regresses labels (they override this and `decode`). Attacks stated in the normalised space use it."""
        return self.head(self.body(z))

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Raw output -> class scores (B, classes): the identity for a classifier whose raw output is its logits."""
        return output

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W) in [0,1] -> (scores (B, classes), representation (B, D))."""
        feats = self.body(self.normalize(x))
        return self.head(feats), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
