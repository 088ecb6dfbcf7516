"""The input space an attack budget is stated in (DESIGN "Attack"): pixels in [0,1], the model's normalised space
(SPEC 3 states eps there), or declared bounds such as [-1,1] (SPEC 5). The attack iterates in that space, so its
eps, steps and clamps mean exactly what the original defined; the result is mapped back to pixels for storage."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

SPACES = ("pixels", "normalized")


@dataclass
class Space:
    """z = encode(x); raw(z) -> the model's raw output (logits, or a label-space prediction); decode(z) -> pixels.
    (lo, hi): the image of the pixel box [0,1] in this space, broadcastable against z (per channel)."""

    name: str
    encode: Callable[[Tensor], Tensor]
    decode: Callable[[Tensor], Tensor]
    raw: Callable[[Tensor], Tensor]
    lo: Tensor | float
    hi: Tensor | float


def check_space(space: str | Sequence[float]) -> str | tuple[float, float]:
    """"pixels", "normalized" or bounds [lo, hi] with lo < hi, else ValueError naming the forms accepted."""
    if isinstance(space, str) and space in SPACES:
        return space
    if (isinstance(space, (list, tuple)) and len(space) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in space) and space[0] < space[1]):
        return float(space[0]), float(space[1])
    raise ValueError(f"space: expected 'pixels', 'normalized' or bounds [lo, hi] with lo < hi, got {space!r}")


def class_scores(model: nn.Module, raw: Tensor) -> Tensor:
    """Raw output -> class scores: a label model decodes to its nearest label; a plain module's output is its scores."""
    decode = getattr(model, "decode", None)
    return raw if decode is None else decode(raw)


def make_space(space: str | Sequence[float], model: nn.Module) -> Space:
    """The Space of `space` for a Classifier (normalize, forward_normalized from advpipe.models.base)."""
    space = check_space(space)
    if not hasattr(model, "forward_normalized"):  # a plain module taking pixels (foolbox-style): pixels only
        if space != "pixels":
            raise ValueError(f"space {space!r}: needs a Classifier (normalize, forward_normalized), got "
                             f"{type(model).__name__}")
        return Space("pixels", lambda x: x, lambda z: z, model, 0.0, 1.0)
    if space == "normalized":
        # The model's own normalisation; raw outputs skip it (SPEC 3 attacks the normalised image).
        # Bounds per channel, (1, C, 1, 1): they broadcast against images; vectors (one channel) take the scalar.
        lo, hi = model.normalize(torch.zeros_like(model.mean)), model.normalize(torch.ones_like(model.mean))
        if lo.numel() == 1:
            lo, hi = lo.reshape(()), hi.reshape(())
        return Space("normalized", model.normalize, model.denormalize, model.forward_normalized, lo, hi)

    def pixel_raw(x: Tensor) -> Tensor:
        return model.forward_normalized(model.normalize(x))

    if space == "pixels":
        return Space("pixels", lambda x: x, lambda z: z, pixel_raw, 0.0, 1.0)
    lo, hi = space
    width = hi - lo
    return Space(f"[{lo:g},{hi:g}]", lambda x: x * width + lo, lambda z: (z - lo) / width,
                 lambda z: pixel_raw((z - lo) / width), lo, hi)
