"""Batched, seeded training augmentation on tensors: random crop with zero padding and horizontal flip."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip_params(batch: int, padding: int, hflip: bool,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw per-sample crop offsets (top, left), each in 0..2*padding, and flip flags, in that order."""
    dev = generator.device
    top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=dev)
    left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=dev)
    flip = torch.rand(batch, generator=generator, device=dev) < 0.5 if hflip \
        else torch.zeros(batch, dtype=torch.bool, device=dev)
    return top, left, flip


def crop_flip(x: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Zero-pad x (B, C, H, W) by `padding`, take the HxW crop at (top, left) per sample, flip where `flip`."""
    b, c, h, w = x.shape
    top, left, flip = top.to(x.device), left.to(x.device), flip.to(x.device)
    padded = F.pad(x, (padding,) * 4)  # (B, C, H+2p, W+2p), zeros like RandomCrop(padding=p)
    rows = top[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = left[:, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # reading columns backwards flips the crop
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(x: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """RandomCrop(H, padding) + RandomHorizontalFlip(0.5) per sample of x (B, C, H, W), deterministic per generator."""
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    return crop_flip(x, padding, *crop_flip_params(x.shape[0], padding, hflip, generator))
