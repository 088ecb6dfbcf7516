"""Architectures by name: the config's `arch` picks a constructor here."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

from advpipe.models.base import Classifier
from advpipe.models.cnn import SmallCNN
from advpipe.models.mlp import MLP
from advpipe.models.preact import PreActResNet
from advpipe.models.resnet import CifarResNet, ResNet18
from advpipe.models.tv_resnet import TVResNet18

ARCHS: dict[str, Callable[..., Classifier]] = {
    "small_cnn": SmallCNN,
    "resnet18": ResNet18,
    "preact_resnet": PreActResNet,
    "cifar_resnet": CifarResNet,
    "mlp": MLP,
    "tv_resnet18": TVResNet18,
}


def build_model(arch: str, *, in_channels: int, num_classes: int, image_size: int | None,
                mean=None, std=None, input_shape: Sequence[int] | None = None, one_logit: bool = False,
                **arch_args: Any) -> Classifier:
    """Construct architecture `arch` for inputs (in_channels, image_size, image_size), or of per-sample shape
    `input_shape` for the architectures that take it (vectors), and `num_classes`.

    one_logit: a binary model with a single output d (SPEC 5); its class scores are (-d, d).
    """
    if arch not in ARCHS:
        raise KeyError(f"unknown architecture {arch!r}; known: {sorted(ARCHS)}")
    if one_logit and num_classes != 2:
        raise ValueError(f"one_logit: a one-logit model is binary, but num_classes is {num_classes}")
    constructor = ARCHS[arch]
    if input_shape is not None and "input_shape" in inspect.signature(constructor).parameters:
        arch_args["input_shape"] = tuple(int(s) for s in input_shape)
    model = constructor(in_channels=in_channels, num_classes=1 if one_logit else num_classes,
                        image_size=image_size, mean=mean, std=std, **arch_args)
    model.one_logit = bool(one_logit)
    return model
