"""The smallest images an architecture can take, found by running it: a network whose pooling or strides shrink
its input below one pixel fails deep inside its forward pass; the stage that first builds it on a dataset asks
here first and refuses images that are too small, naming the dataset, its image size and the minimum.

Generic: the network of the registry (advpipe.models.registry) is built for (channels, s, s) inputs and run on a
zero batch in eval mode without gradients, for growing s; the smallest s that runs is the minimum (cached per
architecture, arguments and channels, so a job pays a few forward passes of tiny images at most once).
"""
from __future__ import annotations

import json
import warnings
from functools import lru_cache
from typing import Any, Mapping

import torch

from advpipe.models.registry import build_model

# Sizes tried before giving up: an architecture that runs on none of them is not refused for its input size (its
# own error is reported where it fails).
MAX_SIDE = 1024


def runs_on(arch: str, arch_args: Mapping[str, Any], in_channels: int, side: int) -> bool:
    """Whether `arch` built for (in_channels, side, side) inputs runs a forward pass of one such zero image."""
    return _runs_on(arch, _key(arch_args), int(in_channels), int(side))


def min_input_size(arch: str, arch_args: Mapping[str, Any], in_channels: int) -> int | None:
    """The smallest image side `arch` (with `arch_args`) runs on, or None when it runs on none up to MAX_SIDE.

    Doubling then bisection: the sizes a network runs on are all those from its minimum up.
    """
    return _min_input_size(arch, _key(arch_args), int(in_channels))


def input_size_problem(arch: str, arch_args: Mapping[str, Any], in_channels: int, side: int,
                       model: torch.nn.Module | None = None) -> int | None:
    """None when `arch` runs on (in_channels, side, side) images; else the minimum side it needs (> side).

    `model`, the network already built for those images, is tried first (no second build when it runs); it is
    left in the mode it was in, its weights and buffers untouched (eval mode, no gradients).
    """
    if model is not None and _forward_runs(model, in_channels, side):
        return None
    if runs_on(arch, arch_args, in_channels, side):
        return None
    need = min_input_size(arch, arch_args, in_channels)
    return need if need is not None and need > side else None


def _forward_runs(model: torch.nn.Module, in_channels: int, side: int) -> bool:
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            param = next(model.parameters(), None)
            model(torch.zeros(1, in_channels, side, side, device=param.device if param is not None else "cpu"))
    except _SIZE_ERRORS:
        return False
    finally:
        model.train(training)
    return True


_SIZE_ERRORS = (RuntimeError, ValueError, ZeroDivisionError, IndexError)


def _key(arch_args: Mapping[str, Any]) -> str:
    return json.dumps(dict(arch_args), sort_keys=True, default=str)


@lru_cache(maxsize=256)
def _runs_on(arch: str, args_key: str, in_channels: int, side: int) -> bool:
    try:
        with warnings.catch_warnings():  # e.g. "Initializing zero-element tensors" for a 0-wide layer
            warnings.simplefilter("ignore")
            # The global RNG is not touched: the probe must not change the weights a job draws next.
            # A pretrained-weights file (tv_resnet18's `weights`) changes no shape: not read for a probe.
            args = {k: v for k, v in json.loads(args_key).items() if k != "weights"}
            with torch.random.fork_rng(devices=[]):
                model = build_model(arch, in_channels=in_channels, num_classes=2, image_size=side, **args)
            model.eval()
            with torch.no_grad():
                model(torch.zeros(1, in_channels, side, side))
    except _SIZE_ERRORS:
        return False
    return True


@lru_cache(maxsize=64)
def _min_input_size(arch: str, args_key: str, in_channels: int) -> int | None:
    hi = 1
    while not _runs_on(arch, args_key, in_channels, hi):
        if hi >= MAX_SIDE:
            return None
        hi = min(hi * 2, MAX_SIDE)
    lo = hi // 2  # fails (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _runs_on(arch, args_key, in_channels, mid):
            hi = mid
        else:
            lo = mid
    return hi


def check_input_size(spec: Mapping[str, Any], dataset: str, model: torch.nn.Module | None = None,
                     where: str = "") -> None:
    """DataError unless the network model.json's `spec` describes runs on the dataset's images (spec's in_channels
    and image_size); names the dataset (`dataset`, its config name, and `where`: its file), its image size, the
    architecture and the smallest image side it needs. Vector samples (`input_shape` (D,)) always pass."""
    from advpipe.data import DataError  # data does not import models: no cycle, but kept local to this check

    shape = spec.get("input_shape")
    if shape is not None and (len(shape) != 3 or shape[1] != shape[2]):
        # Vectors (SPEC 5's Spheres) have no pooling or stride to shrink away, and the search below is over square
        # images: nothing to refuse here.
        return
    arch, args, side = spec["arch"], dict(spec.get("arch_args", {})), int(spec["image_size"])
    need = input_size_problem(arch, args, spec["in_channels"], side, model)
    if need is not None:
        source = f" ({where})" if where else ""
        raise DataError(f"dataset {dataset!r}{source}: images are {side}x{side} but architecture {arch!r} "
                        f"(arch_args {args}) needs images of at least {need}x{need}; expected images of side >= "
                        f"{need} (larger images, or another architecture)")
