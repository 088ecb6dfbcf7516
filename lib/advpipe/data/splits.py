"""Splits: the per-sample container every loader returns, seeded stratified splits and subsets; the mapping
between pixels and a dataset's natural value range."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from advpipe.errors import InputError


class DataError(InputError, ValueError):
    """A dataset file is unreadable or holds values a model cannot take; the message names the file."""


@dataclass
class Split:
    """One split of a dataset: images, labels and each sample's stable index in the source dataset.

    `extras` holds further per-sample tensors, each (N, ...), sliced along with x: e.g. "dx", the ground-truth
    vector to the closest point of the other class (SPEC 5), in the dataset's natural units (see to_natural).
    """

    x: torch.Tensor  # (N, C, H, W) images or (N, D) vectors, float32 pixels in [0, 1]
    y: torch.Tensor  # (N,) int64
    index: np.ndarray  # (N,) int64, the sample's position in the source dataset (dumps join on it)
    classes: list[str]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)


def take(split: Split, positions: np.ndarray) -> Split:
    """The samples of `split` at `positions` (positions within the split, not dataset indices)."""
    pos = torch.as_tensor(np.asarray(positions, dtype=np.int64))
    return Split(x=split.x[pos], y=split.y[pos], index=split.index[pos.numpy()], classes=list(split.classes),
                 extras={k: v[pos] for k, v in split.extras.items()})


def to_natural(x: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Pixels in [0, 1] -> the dataset's natural units: lo + (hi - lo) * x (DatasetInfo.range).

    A difference of two samples (a perturbation, Split.extras["dx"]) scales by hi - lo only, without lo.
    """
    lo, hi = value_range
    return x * (hi - lo) + lo


def to_pixels(x: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Natural units -> pixels in [0, 1]: (x - lo) / (hi - lo), the inverse of to_natural."""
    lo, hi = value_range
    return (x - lo) / (hi - lo)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified (train, test) split of positions 0..N-1, each returned sorted."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    from sklearn.model_selection import train_test_split  # ~1 s to import: only unsplit sources need it

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


def validation_level_split(n: int, validation_fraction: float, level: float,
                           seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) positions of SPEC 3's data-efficiency protocol over a training split of n samples.

    As label_representations' train.py: `indices = arange(n)`, shuffled by numpy's legacy generator seeded
    `seed` (the original's `np.random.seed(seed); np.random.shuffle(indices)`, here a local RandomState with
    the same stream); the first round(validation_fraction * n) are validation, held out before anything
    else; training takes the next int(n * level / 100), cut off at the end (45k of 50k at level 100). So
    smaller levels are prefixes of larger ones and never touch the validation images. Returned in shuffled
    order (the original's), not sorted.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction}")
    if not 0 < level <= 100:
        raise ValueError(f"level is a percentage of the training split in (0, 100], got {level}")
    indices = np.arange(n, dtype=np.int64)
    np.random.RandomState(seed).shuffle(indices)
    n_val = int(round(validation_fraction * n))
    train = indices[n_val:n_val + int(n * level / 100)]
    if n_val == 0 or len(train) == 0:
        raise ValueError(f"{n} samples leave {n_val} for validation and {len(train)} for training at level "
                         f"{level}; expected both non-empty (raise the level or the validation fraction)")
    return train, indices[:n_val]
