"""Per-sample size of a perturbation, as stored in every attack dump (SPEC 1 item 3 norms.csv, DESIGN dumps)."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def perturbation_norms(x: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
    """d = x_adv - x flattened per sample -> {"L0": #(|d|>0) (int64), "L1", "L2", "Linf", "RMS"} each of shape (N,).

    RMS(d) = sqrt(mean(d^2)) over all pixels and channels (SPEC conventions) = L2 / sqrt(numel per sample).
    """
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv differ in shape: {tuple(x.shape)} vs {tuple(x_adv.shape)}")
    d = (x_adv - x).flatten(1)
    a = d.abs()
    l2 = torch.linalg.vector_norm(d, ord=2, dim=1)
    return {
        "L0": (a > 0).sum(1),
        "L1": a.sum(1),
        "L2": l2,
        "Linf": a.amax(1) if d.shape[1] else torch.zeros_like(l2),
        "RMS": l2 / math.sqrt(max(d.shape[1], 1)),
    }
