"""The UNet generator of the direct estimate (SPEC 5 "Direct estimate of dx"), as the original's
ricbl/gradient-direction-of-robust-models src/direct_method/generator.py (UNet, nf = 64):

- down path: two conv3x3-BN-ReLU at full size, then per down-sampling a 2x2 max-pool and two conv-BN-ReLU
  doubling the channels;
- the class enters at the bottleneck (not at the input): three constant maps, the normalised target class
  1 - y, the normalised own class y (both (v - 0.7) / 0.2) and their difference;
- up path: bilinear x2 up-sampling + conv-BN-ReLU, concatenation with the skip, two conv-BN-ReLU; the last
  block is conv-BN without activation, so dx_hat leaves through a BatchNorm;
- init: conv kaiming-normal (relu), bias 0; BatchNorm weight N(0.1, 0.01), bias 0; BN momentum 0.01.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

# The original normalises the class inputs with the statistics it used for its COPD target (0.7, 0.2).
_CLASS_MEAN, _CLASS_STD = 0.7, 0.2


def conv_bn(in_channels: int, out_channels: int, act: bool = True) -> nn.Sequential:
    """conv3x3 (same size) - BN (momentum 0.01) - ReLU (or nothing for the output block)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1),
                         nn.BatchNorm2d(out_channels, momentum=0.01),
                         nn.ReLU() if act else nn.Identity())


class _Up(nn.Module):
    """Bilinear x2 (align_corners, as the original) + conv-BN-ReLU, concatenated with the skip, two conv-BN."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, last: bool):
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                                nn.Conv2d(in_channels, skip_channels, 3, padding=1),
                                nn.BatchNorm2d(skip_channels, momentum=0.01), nn.ReLU())
        self.conv = nn.Sequential(conv_bn(2 * skip_channels, skip_channels),
                                  conv_bn(skip_channels, out_channels, act=not last))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([self.up(x), skip], 1))


def init_weights(module: nn.Module) -> None:
    """The original's weights_init (from orobix's VA-GAN port): applied to the generators only."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        nn.init.normal_(module.weight, mean=0.1, std=0.01)
        nn.init.zeros_(module.bias)


class UNetGenerator(nn.Module):
    """G(x, 1 - y, y) -> dx_hat: (B, C, H, W) natural-unit images -> (B, C, H, W) natural-unit directions.

    H and W must be divisible by 2**downsamplings (4 for 224x224 Squares, 2 for MNIST / 8x8 digits).
    """

    def __init__(self, in_channels: int, nf: int = 64, downsamplings: int = 4):
        super().__init__()
        if downsamplings < 1:
            raise ValueError(f"UNetGenerator: downsamplings must be >= 1, got {downsamplings}")
        self.downsamplings = downsamplings
        self.down = nn.ModuleList([nn.Sequential(conv_bn(in_channels, nf), conv_bn(nf, nf))])
        for i in range(downsamplings):
            self.down.append(nn.Sequential(nn.MaxPool2d(2), conv_bn(nf * 2 ** i, nf * 2 ** (i + 1)),
                                           conv_bn(nf * 2 ** (i + 1), nf * 2 ** (i + 1))))
        # up[i] brings level i+1 back to level i; the deepest one also reads the three class maps.
        self.up = nn.ModuleList(
            _Up(nf * 2 ** (i + 1) + (3 if i == downsamplings - 1 else 0), nf * 2 ** i,
                in_channels if i == 0 else nf * 2 ** i, last=i == 0)
            for i in range(downsamplings))
        self.apply(init_weights)

    def forward(self, x: Tensor, neg_y: Tensor, y: Tensor) -> Tensor:
        side = 2 ** self.downsamplings
        if x.ndim != 4 or x.shape[2] % side or x.shape[3] % side:
            raise ValueError(f"UNetGenerator with {self.downsamplings} down-samplings needs (B, C, H, W) with H, W "
                             f"divisible by {side}, got {tuple(x.shape)}")
        feats = [self.down[0](x)]
        for block in self.down[1:]:
            feats.append(block(feats[-1]))
        bottom = feats[-1]
        target = (neg_y.reshape(-1, 1, 1, 1).to(x.dtype) - _CLASS_MEAN) / _CLASS_STD
        own = (y.reshape(-1, 1, 1, 1).to(x.dtype) - _CLASS_MEAN) / _CLASS_STD
        maps = torch.cat([target, own, own - target], 1).expand(-1, -1, *bottom.shape[2:])
        h = torch.cat([bottom, maps], 1)
        for i in reversed(range(self.downsamplings)):
            h = self.up[i](h, feats[i])
        return h


__all__ = ["UNetGenerator", "conv_bn", "init_weights"]
