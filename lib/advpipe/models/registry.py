"""Architectures by name: the config's `arch` picks a constructor here."""
from __future__ import annotations

from typing import Any, Callable

from advpipe.models.base import Classifier
from advpipe.models.cnn import SmallCNN
from advpipe.models.preact import PreActResNet
from advpipe.models.resnet import CifarResNet, ResNet18

ARCHS: dict[str, Callable[..., Classifier]] = {
    "small_cnn": SmallCNN,
    "resnet18": ResNet18,
    "preact_resnet": PreActResNet,
    "cifar_resnet": CifarResNet,
}


def build_model(arch: str, *, in_channels: int, num_classes: int, image_size: int,
                mean=None, std=None, **arch_args: Any) -> Classifier:
    """Construct architecture `arch` for inputs (in_channels, image_size, image_size) and `num_classes`."""
    if arch not in ARCHS:
        raise KeyError(f"unknown architecture {arch!r}; known: {sorted(ARCHS)}")
    return ARCHS[arch](in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                       mean=mean, std=std, **arch_args)
