"""Pre-activation ResNet-(6n+2) of the adversarial-explanations study (SPEC 2; ResNet-44 in the paper)."""
from __future__ import annotations

import torch
from torch import nn

from advpipe.models.activations import make_activation
from advpipe.models.base import Classifier


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """pre = act(BN(x)); main = conv3x3(s)(pre) -> BN -> act -> conv3x3; out = main + (x, or conv3x3(s)(pre)).

    Submodule names follow the authors' `_PreActBlock` (pre, main, shortcut) so their keys read alike.
    """

    def __init__(self, cin: int, cout: int, stride: int, activation: str, hhrelu_delta: float):
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(cin), make_activation(activation, hhrelu_delta))
        self.main = nn.Sequential(
            _conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), make_activation(activation, hhrelu_delta),
            _conv3x3(cout, cout),
        )
        # The shortcut projection is a 3x3 conv on `pre` (not the usual 1x1 on x), as the authors built it.
        self.shortcut = _conv3x3(cin, cout, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre(x)
        return self.main(pre) + (x if self.shortcut is None else self.shortcut(pre))


class PreActResNet(Classifier):
    """stem conv3x3 -> 3 stages of n PreActBlocks (widths w, 2w, 4w; strides 1, 2, 2) -> BN -> act ->
    global average pool = representation (4w) -> linear head.

    depth = 6n + 2 (44: n = 7, the paper's net). The authors pool with AvgPool2d(image_size // 4), which
    is the global pool on 32x32 inputs; the adaptive global pool here also serves 8x8 digits, so
    `image_size` only completes the common constructor signature.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, mean=None, std=None,
                 depth: int = 44, width: int = 16, activation: str = "relu", hhrelu_delta: float = 0.5):
        super().__init__(in_channels, mean, std)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 blocks per stage (8, 14, 20, ..., 44, ...), "
                             f"got {depth!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        make_activation(activation, hhrelu_delta)  # fail early on a bad name or delta
        self.depth, self.width, self.activation = depth, width, activation
        n = (depth - 2) // 6
        layers: list[nn.Module] = [_conv3x3(in_channels, width)]
        cin = width
        for stage in range(3):
            cout = width * 2 ** stage
            layers.append(nn.Sequential(*[
                PreActBlock(cin if i == 0 else cout, cout, 2 if (i == 0 and stage > 0) else 1,
                            activation, hhrelu_delta) for i in range(n)]))
            cin = cout
        layers += [nn.BatchNorm2d(cin), make_activation(activation, hhrelu_delta),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        # The authors' head is a 1x1 conv on the 1x1 pooled map, which is exactly this Linear.
        self.head = nn.Linear(cin, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):  # the Linear is the authors' 1x1 conv: same init
                nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero last conv of every residual branch: identity-shortcut blocks start as the identity
        # (arXiv:1812.01187); a projecting block starts as its shortcut conv.
        for m in self.modules():
            if isinstance(m, PreActBlock):
                nn.init.zeros_(m.main[-1].weight)
