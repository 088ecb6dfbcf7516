"""torchvision's ResNet-18 as a Classifier: the image classifier of the gradient-direction study (SPEC 5,
ricbl {direct,indirect}_method/classifier.py)."""
from __future__ import annotations

import math
import os
from collections import OrderedDict

import torch
from torch import nn

from advpipe.models.base import Classifier

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# How the original maps its input z (its [-1, 1] pixel range) before the ImageNet statistics: the direct method
# normalises z as it is, ((z - mean) / std); the indirect one first maps z to [0, 1], ((z/2 + 0.5 - mean) / std).
IMAGENET_MODES = ("direct", "indirect")


class ImageNetInput(nn.Module):
    """Grey (B, 1, H, W) -> 3 channels (the original's `expand`), then optionally the ImageNet normalisation in
    the original's `mode` (IMAGENET_MODES). Parameter-free: the statistics are non-persistent buffers."""

    def __init__(self, in_channels: int, mode: str | None):
        super().__init__()
        self.expand, self.mode = in_channels == 1, mode
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.expand:
            z = z.expand(-1, 3, -1, -1)
        if self.mode is None:
            return z
        if self.mode == "indirect":
            z = z / 2 + 0.5
        return (z - self.mean) / self.std


def _imagenet_mode(value: bool | str | None) -> str | None:
    """arch_arg imagenet_normalize -> None or a mode of IMAGENET_MODES; `true` is the direct method's (SPEC 5's
    ImageNet-pretrained classifier)."""
    if value is None or value is False:
        return None
    if value is True:
        return "direct"
    if value in IMAGENET_MODES:
        return value
    raise ValueError(f"imagenet_normalize: expected false, true (= 'direct') or one of {list(IMAGENET_MODES)}, "
                     f"got {value!r}")


class TVResNet18(Classifier):
    """torchvision.models.resnet18: body = ImageNetInput, conv1 ... layer4, avgpool, flatten (the 512-d
    representation); head = fc (num_classes outputs, 1 for a one-logit model).

    The Classifier's own mean/std map the stored pixels x in [0, 1] to the original's input z (mean = std = 0.5
    gives z = 2x - 1, its [-1, 1] range); ImageNetInput then does what the original did to z.

    arch_args:
      weights: a local torchvision ImageNet state_dict file (torch.save of resnet18().state_dict()), loaded with
        weights_only=True, fc left at its fresh initialisation; null = from scratch (noted in `init_note`).
      frozen_bn: BN layers stay in eval mode in train mode (the direct method; the indirect one's --deactivate_bn).
      cifar_stem: conv1 3x3 stride 1 padding 1 and no max-pool, every conv re-initialised kaiming_uniform(a=sqrt 5)
        as the indirect method's CIFAR model (from scratch: ImageNet weights do not fit the 3x3 stem).
      imagenet_normalize: false, 'direct' (= true) or 'indirect' (IMAGENET_MODES).
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int | None = None,
                 weights: str | os.PathLike | None = None, frozen_bn: bool = False, cifar_stem: bool = False,
                 imagenet_normalize: bool | str | None = False, mean=None, std=None):
        super().__init__(in_channels, mean, std)
        if in_channels not in (1, 3):
            raise ValueError(f"tv_resnet18: takes 3-channel or grey (1-channel) images, got {in_channels} channels")
        if cifar_stem and weights is not None:
            raise ValueError("tv_resnet18: cifar_stem trains from scratch (its 3x3 conv1 does not take the ImageNet "
                             "7x7 weights); drop `weights` or `cifar_stem`")
        import torchvision  # here, not at the top: importing it costs every job 1.2 s (torch._dynamo), most never build this

        net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
        if cifar_stem:
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
            for m in net.modules():
                if isinstance(m, nn.Conv2d):  # the original's init for its CIFAR model (PyTorch's Conv2d default)
                    nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
        self.body = nn.Sequential(OrderedDict(
            [("input", ImageNetInput(in_channels, _imagenet_mode(imagenet_normalize)))]
            + [(name, getattr(net, name)) for name in
               ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")]
            + [("flatten", nn.Flatten())]))
        self.head = net.fc
        if weights is not None:
            self.load_imagenet(weights)
            self.init_note = f"tv_resnet18: ImageNet weights from {weights} (fc freshly initialised)"
        else:
            self.init_note = ("tv_resnet18: trained from scratch" + (" (CIFAR stem, as the original's CIFAR model)"
                              if cifar_stem else " (no `weights` file given; the original starts from torchvision's "
                              "ImageNet weights)"))
        if frozen_bn:
            self.freeze_batchnorm()

    def load_imagenet(self, path: str | os.PathLike) -> None:
        """Load a torchvision resnet18 state_dict file into the body (fc skipped); CheckpointError naming the file
        when it is missing, unreadable, unsafe or of another network."""
        from advpipe.models.checkpoint import CheckpointError, read_state  # checkpoint imports the registry

        expected = "expected a torchvision resnet18 state_dict saved with torch.save (arch_args.weights)"
        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: file does not exist; {expected}")
        state = read_state(path, expected)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: holds no state_dict of tensors; {expected}")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            self.body.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: does not fit torchvision's resnet18: {err}; {expected}") from None
