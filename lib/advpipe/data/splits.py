"""Splits: the per-sample container every loader returns, seeded stratified splits and subsets."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split


@dataclass
class Split:
    """One split of a dataset: images, labels and each sample's stable index in the source dataset."""

    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64
    index: np.ndarray  # (N,) int64, the sample's position in the source dataset (dumps join on it)
    classes: list[str]

    def __len__(self) -> int:
        return len(self.y)


def take(split: Split, positions: np.ndarray) -> Split:
    """The samples of `split` at `positions` (positions within the split, not dataset indices)."""
    pos = torch.as_tensor(np.asarray(positions, dtype=np.int64))
    return Split(x=split.x[pos], y=split.y[pos], index=split.index[pos.numpy()], classes=list(split.classes))


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified (train, test) split of positions 0..N-1, each returned sorted."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    train, test = train_test_split(np.arange(len(labels), dtype=np.int64), test_size=test_fraction,
                                   stratify=labels, random_state=seed)
    # Sorted, so a split lists its samples in dataset order whatever the shuffle drew.
    return np.sort(train), np.sort(test)


def subset(split: Split, n: int, seed: int) -> Split:
    """A seeded random subset of `n` samples (without replacement, kept in split order); all if n >= len."""
    if n < 0:
        raise ValueError(f"subset size must be >= 0, got {n}")
    if n >= len(split):
        return split
    positions = np.sort(np.random.default_rng(seed).choice(len(split), size=n, replace=False))
    return take(split, positions)
