"""Numeric label types of the label-representations study (SPEC 3): one fixed target tensor per class.

Every generator returns (C, *label_shape); randomness comes from a local numpy Generator, never the
global RNG, so building labels inside a job cannot shift any other seeded stream.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from advpipe.errors import InputError

MAX_VALUE = 80.0  # the originals scale every high-dimensional label to [0, 80]
SIDE = 64         # 64x64 label images


class LabelError(InputError, ValueError):
    """A label kind, parameter or label file that cannot be used; the message names what was expected."""


def category_labels(num_classes: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """One-hot rows (the identity): what CE targets are, kept as tensors so the statistics apply."""
    return np.eye(num_classes, dtype=np.float32)


def uniform_labels(num_classes: int, rng: np.random.Generator | None = None, side: int = SIDE) -> np.ndarray:
    """Class i is the constant side x side matrix i * 80 / (C - 1)."""
    if num_classes < 2:
        raise LabelError(f"uniform labels need at least 2 classes, got {num_classes}")
    values = np.arange(num_classes, dtype=np.float64) * MAX_VALUE / (num_classes - 1)
    return np.broadcast_to(values[:, None, None], (num_classes, side, side)).astype(np.float32)


def random_labels(num_classes: int, rng: np.random.Generator, side: int = SIDE) -> np.ndarray:
    """i.i.d. U[0, 80] entries, side x side per class."""
    return rng.uniform(0.0, MAX_VALUE, (num_classes, side, side)).astype(np.float32)


def lowdim_labels(num_classes: int, rng: np.random.Generator, dim: int = 10) -> np.ndarray:
    """A dim-vector per class, U[0, 80] (the original's generator is not published; its file looks so)."""
    return rng.uniform(0.0, MAX_VALUE, (num_classes, int(dim))).astype(np.float32)


def normal_dim_labels(num_classes: int, rng: np.random.Generator, dim: int) -> np.ndarray:
    """cdu890 entropy labels: class i ~ N(i, 0.1^2)^dim, float64 as the original's files."""
    if int(dim) < 1:
        raise LabelError(f"normal_dim needs a dimension >= 1, got {dim}")
    means = np.arange(num_classes, dtype=np.float64)[:, None]
    return rng.normal(means, 0.1, (num_classes, int(dim)))


def uniform_gap_labels(num_classes: int, rng: np.random.Generator, gap: float, dim: int = 50) -> np.ndarray:
    """cdu890 overlap labels: class i ~ U[i*gap, 9 + i*gap]^dim."""
    if gap < 0:
        raise LabelError(f"uniform_gap needs a gap >= 0, got {gap}")
    low = np.arange(num_classes, dtype=np.float64)[:, None] * gap
    return rng.uniform(low, low + 9.0, (num_classes, int(dim))).astype(np.float32)


def _blob_image(x0: float, y0: float, theta: float, size: float, aspect: float, side: int) -> np.ndarray:
    """imagen's Gaussian on the unit square [-0.5, 0.5]^2: y-sigma = size/2, x-sigma = aspect * y-sigma,
    rotated by theta about (x0, y0); row 0 is the top (y = +0.5), as imagen draws it."""
    centres = (np.arange(side) + 0.5) / side - 0.5
    gx, gy = np.meshgrid(centres, -centres)
    dx, dy = gx - x0, gy - y0
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * dx + s * dy, -s * dx + c * dy
    ysigma = size / 2.0
    xsigma = aspect * ysigma
    return np.exp(-u**2 / (2 * xsigma**2) - v**2 / (2 * ysigma**2))


def composite_labels(num_classes: int, rng: np.random.Generator, blobs: int = 10, blob_size: float = 0.15,
                     aspect: float = 1 / 0.31, side: int = SIDE) -> np.ndarray:
    """Sum of `blobs` oriented Gaussians per class, min-max scaled to [0, 80].

    Faithful in spirit to the original (imagen Composite of Gaussian(size=0.15), x, y ~ U-0.5, orientation
    ~ pi*U, min-max to 0..255, resized to 64x64, *80/255). Differences: numpy instead of imagen (not a
    dependency); drawn directly at side x side instead of imagen's 256x256 then resized; positions and angles
    from this Generator instead of numbergen streams seeded i+1..i+3, so the patterns differ from the
    committed file; imagen's default aspect ratio 1/0.31 is assumed. The 8-bit quantisation is skipped
    (it would make values repeat, where the original table's entropy 12.0 says all 4096 are distinct).
    """
    out = np.empty((num_classes, side, side), dtype=np.float64)
    for k in range(num_classes):
        xs, ys = rng.uniform(-0.5, 0.5, blobs), rng.uniform(-0.5, 0.5, blobs)
        thetas = np.pi * rng.uniform(0.0, 1.0, blobs)
        img = sum(_blob_image(x, y, t, blob_size, aspect, side) for x, y, t in zip(xs, ys, thetas))
        lo, hi = img.min(), img.max()
        out[k] = (img - lo) / (hi - lo) * MAX_VALUE if hi > lo else 0.0
    return out.astype(np.float32)


def load_label_file(path: str | os.PathLike, num_classes: int) -> np.ndarray:
    """A user's (classes, ...) .npy (bert and glove labels come this way); float64 kept, else float32."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"label file {path}: not found (expected a .npy of shape ({num_classes}, ...))")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # np.load raises several types for corrupt files; all mean "not a label file"
        raise LabelError(f"label file {path}: not a readable .npy array ({exc})") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise LabelError(f"label file {path}: expected a numeric array, got dtype {getattr(arr, 'dtype', '?')}")
    if arr.ndim < 2 or arr.shape[0] != num_classes:
        raise LabelError(f"label file {path}: shape {arr.shape}, expected ({num_classes}, ...) "
                         f"(one label tensor per class, first dimension = number of classes)")
    arr = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32)
    if not np.isfinite(arr).all():
        raise LabelError(f"label file {path}: {int((~np.isfinite(arr)).sum())} NaN/Inf values; "
                         "labels must be finite")
    return arr
