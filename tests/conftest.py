"""Shared fixtures: a small CNN trained in seconds on scikit-learn's digits (used by the attack tests and bench/)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F


def digits_split(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn digits on the 1/255 grid, (N,1,8,8) float32; deterministic 70/30 split -> x_tr, y_tr, x_te, y_te."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (np.round(d.images / 16 * 255) / 255).astype(np.float32)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=0.3, random_state=seed, stratify=d.target)
    return torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te), torch.from_numpy(y_te)


def train_digits_cnn(x: torch.Tensor, y: torch.Tensor, epochs: int = 8, seed: int = 0) -> torch.nn.Module:
    """small_cnn trained with Adam (lr 3e-3, batch 64); returned in eval mode."""
    from advpipe.models import build_model
    torch.manual_seed(seed)
    model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    opt.zero_grad()  # no stale .grad on the returned model
    return model.eval()


@pytest.fixture(scope="module")
def digits_model():
    """(model, x_test, y_test, pred_test) for the attack tests; >90% test accuracy."""
    x_tr, y_tr, x_te, y_te = digits_split()
    model = train_digits_cnn(x_tr, y_tr)
    with torch.no_grad():
        pred = model(x_te).argmax(1)
    return model, x_te, y_te, pred
