"""Activations by name; the Half-Huber ReLU of the adversarial-explanations study (SPEC 2)."""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = ("relu", "hhrelu")


def hhrelu(x: torch.Tensor, delta: float = 0.5) -> torch.Tensor:
    """Half-Huber ReLU: 0 for x <= 0, x^2/(2 delta) on (0, delta], x - delta/2 above; h' = clamp(x, 0, delta)/delta.

    Plain differentiable ops (no custom backward), so double backprop (create_graph) sees the exact
    second derivative, 1/delta on (0, delta) and 0 elsewhere, for any delta > 0.
    """
    # Not clamp(x,0,d)^2/(2d) + relu(x-d): clamp's gradient is 0 at x = d, where h' must be 1.
    # relu'(0) = 0 gives h'(0) = 0; where() passes no gradient to the branch it does not pick.
    r = torch.relu(x)
    return torch.where(x > delta, x - delta / 2.0, r * r / (2.0 * delta))


class HHReLU(nn.Module):
    """Half-Huber ReLU with a fixed `delta` (a constant, not a parameter or buffer: model.json holds it)."""

    def __init__(self, delta: float = 0.5):
        super().__init__()
        delta = float(delta)
        if not delta > 0:  # also refuses NaN
            raise ValueError(f"hhrelu_delta must be > 0, got {delta}")
        self.delta = delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hhrelu(x, self.delta)

    def extra_repr(self) -> str:
        return f"delta={self.delta}"


def make_activation(name: str, hhrelu_delta: float = 0.5) -> nn.Module:
    """A fresh activation module: "relu" or "hhrelu" (with delta `hhrelu_delta`)."""
    if name == "relu":
        return nn.ReLU()
    if name == "hhrelu":
        return HHReLU(hhrelu_delta)
    raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {name!r}")
