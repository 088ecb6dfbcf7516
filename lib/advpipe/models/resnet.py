"""CIFAR ResNets: ResNet-18 of the kuangliu design, as trained by vrapi (SPEC 1), and the bearpaw ResNet-32/110
(16/32/64 channels) of the label-representations study (SPEC 3)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from advpipe.models.base import Classifier


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a 1x1 conv-BN shortcut whenever the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(Classifier):
    """stem conv3x3(64)-BN-ReLU; stages 64/128/256/512 x 2 blocks, strides 1,2,2,2; avg-pool; linear."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int,
                 width: int = 64, blocks: tuple[int, ...] = (2, 2, 2, 2), mean=None, std=None):
        super().__init__(in_channels, mean, std)
        layers = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
        for stage, n in enumerate(blocks):
            cout = width * 2 ** stage
            for i in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (i == 0 and stage > 0) else 1))
                cin = cout
        # kuangliu uses avg_pool2d(out, 4) on 32x32 inputs, i.e. a global pool; adaptive keeps any size.
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)


class CifarResNet(ResNet18):
    """bearpaw's CIFAR ResNet-(6n+2) (SPEC 3 resnet32, resnet110): conv3x3(16)-BN-ReLU, 3 stages of n
    BasicBlocks at 16/32/64 channels (strides 1, 2, 2, 1x1 conv-BN shortcut when the shape changes, bearpaw's
    `downsample`), global average pool (bearpaw's AvgPool2d(8) on 32x32 inputs) -> 64-d representation."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, depth: int = 32, mean=None, std=None):
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        super().__init__(in_channels, num_classes, image_size, width=16, blocks=(n, n, n), mean=mean, std=std)
