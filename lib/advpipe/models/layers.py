"""Named layers of every architecture, and their activations through forward hooks.

A layer is named `penultimate` (the representation, the body's output: every model has it), `body.<i>` (the
i-th module of the body, for any architecture whose body is a Sequential), or an alias of the architecture's
own table: the challenge's ResNet-18 names of SPEC 4 (`act2_first_conv` ... `act8_global_avg`), the small
CNN's conv/pool outputs and torchvision's ResNet-18 child names. The MLP has `penultimate` and `body.<i>`.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

# Aliases per architecture: name -> index into the body (a Sequential).
_ALIASES: dict[str, dict[str, int]] = {
    # body: conv, bn, relu, 8 BasicBlocks (2 per stage), AdaptiveAvgPool2d, Flatten (models/resnet.py). The
    # challenge baseline's act<i> names (SPEC 4): act5_block3 is 256 channels, act6_block4 512, act8 the 512-d pool.
    "ResNet18": {"act2_first_conv": 2, "act3_block1": 4, "act4_block2": 6, "act5_block3": 8, "act6_block4": 10,
                 "act8_global_avg": 12},
    # body: conv, relu, conv, relu, maxpool, flatten, linear, relu (models/cnn.py).
    "SmallCNN": {"conv1": 1, "conv2": 3, "pool": 5},
    # body: input, then torchvision's own children by their names (models/tv_resnet.py).
    "TVResNet18": {"conv1": 1, "relu": 3, "layer1": 5, "layer2": 6, "layer3": 7, "layer4": 8, "avgpool": 9},
}


def layer_names(model: nn.Module) -> list[str]:
    """Every name `find_layer` accepts for `model`."""
    body = model.body
    names = ["penultimate", *_ALIASES.get(type(model).__name__, {})]
    if isinstance(body, nn.Sequential):
        names += [f"body.{i}" for i in range(len(body))]
    return names


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The module whose output is layer `name` of `model`; KeyError naming the accepted names otherwise."""
    if name == "penultimate":
        return model.body
    index = _ALIASES.get(type(model).__name__, {}).get(name)
    if index is None and name.startswith("body.") and name[5:].isdigit():
        index = int(name[5:])
    body = model.body
    if index is None or not isinstance(body, nn.Sequential) or index >= len(body):
        raise KeyError(f"layer {name!r} of {type(model).__name__}; expected one of {layer_names(model)}")
    return body[index]


@contextlib.contextmanager
def captured(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """A list that receives `module`'s output at every forward pass inside the block (a forward hook)."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    try:
        yield outputs
    finally:
        handle.remove()


def activations(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, C), the activation of `layer` flattened to (B, m)) from one forward pass of x in [0,1]."""
    with captured(find_layer(model, layer)) as out:
        logits = model(x)
    return logits, out[-1].flatten(1)
