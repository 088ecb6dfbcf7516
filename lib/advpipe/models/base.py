"""The Classifier interface: inputs in [0,1], normalisation inside, scores and representation in one pass."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class Classifier(nn.Module):
    """A network split into `body` (normalised input -> representation) and `head` (representation -> scores).

    Subclasses build `self.body` and `self.head`; the representation is the vector before the final
    linear layer (SPEC 1), returned by `forward_features` from the same forward pass as the scores.

    Samples are images (C, H, W) or vectors (D,) (SPEC 5's Spheres); a vector counts as one channel.
    A one-logit binary model (`one_logit`, SPEC 5) has a head of one output d; its class scores are (-d, d).
    """

    one_logit: bool = False  # set by build_model for a spec with `one_logit: true`
    init_note: str = ""  # how the weights were initialised when that is worth a line in the training log

    def __init__(self, in_channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        mean = [0.0] * in_channels if mean is None else list(mean)
        std = [1.0] * in_channels if std is None else list(std)
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"normalisation mean/std need {in_channels} values, got {mean} / {std}")
        # Buffers, so they travel with the state_dict and the device; (1, C, 1, 1) as every saved model has them.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.body: nn.Module
        self.head: nn.Module

    def _stats_for(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean, std shaped (1, C, 1, ...) to broadcast against x of any rank: (B, D) vectors get (1, 1)."""
        shape = (1, -1, *[1] * (x.dim() - 2)) if x.dim() >= 2 else (-1,)
        return self.mean.reshape(shape), self.std.reshape(shape)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats_for(x)
        return (x - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of `normalize`: a normalised input back to pixels."""
        mean, std = self._stats_for(z)
        return z * std + mean

    def forward_normalized(self, z: torch.Tensor) -> torch.Tensor:
        """Raw output from an already normalised input: the logits here (the decision value d, (B, 1), of a one-logit
        model); a label-space prediction for models whose head regresses labels (they override this and `decode`).
        Attacks stated in the normalised space use it."""
        return self.head(self.body(z))

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Raw output -> class scores (B, classes): the identity for a classifier whose raw output is its logits;
        (-d, d) for a one-logit model, so argmax is class 1 iff d > 0 (SPEC 5 wraps binary models so)."""
        if not self.one_logit:
            return output
        d = output.reshape(len(output), 1)
        return torch.cat([-d, d], dim=1)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W) or (B, D) in [0,1] -> (scores (B, classes), representation (B, F))."""
        feats = self.body(self.normalize(x))
        return self.decode(self.head(feats)), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def freeze_batchnorm(self) -> None:
        """Keep every BatchNorm layer in eval mode from now on, even in train mode (SPEC 5 after Baumgartner et al.
        2018): running statistics stay as they are, the affine weights still learn. The mark is on the layers, so
        a wrapper sharing the body (a label model) keeps them frozen too."""
        for module in self.modules():
            if isinstance(module, _BatchNorm):
                module.advpipe_frozen = True
                module.eval()

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        for module in self.modules():
            if getattr(module, "advpipe_frozen", False):
                module.eval()
        return self
