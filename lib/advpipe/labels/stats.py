"""Label statistics of cdu890's utils/metrics.py (SPEC 3): entropy and pairwise class distances."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd


def shannon_entropy(tensor: np.ndarray) -> float:
    """Base-2 entropy of the empirical distribution of the values, rounded to 1e-6 (all entries pooled)."""
    _, counts = np.unique(np.round(np.asarray(tensor, dtype=np.float64), 6), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def label_entropy(labels: np.ndarray) -> float:
    """Mean over classes of each class tensor's entropy.

    Per class, not over the whole array: SPEC's table gives random 64x64 labels 12.0 = log2(4096) (pooled
    over 10 classes it would be log2(40960) = 15.3), category 0.47 (one-hot row: 9 zeros, 1 one) and
    uniform 0 (a constant matrix per class).
    """
    labels = np.asarray(labels)
    return float(np.mean([shannon_entropy(t) for t in labels]))


def pairwise_distances(labels: np.ndarray) -> tuple[float, float]:
    """(mean L1, mean L2) over class pairs i < j, after min-max scaling the whole array to [0, 1].

    As the original, the norms are numpy.linalg.norm's with ord=1 and ord=2: vector norms for vector
    labels, but for 2-D labels the *matrix* norms (max absolute column sum, largest singular value). That is
    what reproduces SPEC's table: uniform L1 = L2 = 64 * mean|i-j| / 9 = 26.07, random 64x64 L1 ~ 25.8 and
    L2 ~ 6.4. Labels of more than 2 dimensions per class (no original case) are flattened to vectors.
    """
    labels = np.asarray(labels, dtype=np.float64)
    if labels.shape[0] < 2:
        raise ValueError(f"pairwise distances need at least 2 classes, got shape {labels.shape}")
    lo, hi = labels.min(), labels.max()
    scaled = (labels - lo) / (hi - lo) if hi > lo else np.zeros_like(labels)
    if scaled.ndim > 3 or scaled.ndim == 1:
        scaled = scaled.reshape(len(scaled), -1)
    i, j = np.triu_indices(len(scaled), k=1)
    diffs = scaled[i] - scaled[j]
    if diffs.ndim == 3:
        l1 = np.abs(diffs).sum(axis=1).max(axis=1)            # max column sum, per pair
        l2 = np.linalg.svd(diffs, compute_uv=False)[:, 0]     # spectral norm, per pair
    else:
        l1 = np.abs(diffs).sum(axis=1)
        l2 = np.sqrt((diffs ** 2).sum(axis=1))
    return float(l1.mean()), float(l2.mean())


def label_stats_table(labels: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per label type: shape, min, max, mean, std (get_distances.py) and entropy, L1, L2 (metrics.py)."""
    rows = []
    for name, arr in labels.items():
        arr = np.asarray(arr)
        l1, l2 = pairwise_distances(arr)
        rows.append({"label": name, "shape": "x".join(map(str, arr.shape)), "min": float(arr.min()),
                     "max": float(arr.max()), "mean": float(arr.mean()), "std": float(arr.std()),
                     "entropy": label_entropy(arr), "L1": l1, "L2": l2})
    return pd.DataFrame(rows, columns=["label", "shape", "min", "max", "mean", "std", "entropy", "L1", "L2"])
