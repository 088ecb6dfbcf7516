"""Batched, seeded training augmentation on tensors: random crop with zero or replicate padding, horizontal flip."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# "zeros": torchvision RandomCrop(padding=p) (SPEC 1); "replicate": edge pixels repeated, as
# wwoods/adversarial-explanations-cifar main.py _get_dataset pads before its crop (SPEC 2).
PAD_MODES = ("zeros", "replicate")


def crop_flip_params(batch: int, padding: int, hflip: bool,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw per-sample crop offsets (top, left), each in 0..2*padding, and flip flags, in that order."""
    dev = generator.device
    top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=dev)
    left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=dev)
    flip = torch.rand(batch, generator=generator, device=dev) < 0.5 if hflip \
        else torch.zeros(batch, dtype=torch.bool, device=dev)
    return top, left, flip


def crop_flip(x: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
              pad_mode: str = "zeros") -> torch.Tensor:
    """Pad x (B, C, H, W) by `padding` (`pad_mode`: zeros or replicate), take the HxW crop at (top, left) per
    sample, flip where `flip`."""
    _check_pad_mode(pad_mode)
    b, c, h, w = x.shape
    top, left, flip = top.to(x.device), left.to(x.device), flip.to(x.device)
    if pad_mode == "zeros":
        padded = F.pad(x, (padding,) * 4)  # (B, C, H+2p, W+2p), zeros like RandomCrop(padding=p)
    else:
        padded = F.pad(x, (padding,) * 4, mode="replicate")
    rows = top[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = left[:, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # reading columns backwards flips the crop
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(x: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator,
                     pad_mode: str = "zeros") -> torch.Tensor:
    """RandomCrop(H, padding) + RandomHorizontalFlip(0.5) per sample of x (B, C, H, W), deterministic per generator.

    pad_mode "replicate" is SPEC 2's replicate-pad, flip, crop: the original flips the padded image before
    cropping, which has the same distribution as cropping then flipping (the offsets are symmetric).
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    _check_pad_mode(pad_mode)
    return crop_flip(x, padding, *crop_flip_params(x.shape[0], padding, hflip, generator), pad_mode=pad_mode)


def _check_pad_mode(pad_mode: str) -> None:
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
