"""Sample images as PNG files, one folder per class (SPEC 1: images/<c>_<name>/<idx>.png)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def to_uint8(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [0,1] -> (N, H, W) or (N, H, W, C) uint8 pixels, rounded and clipped."""
    pixels = np.clip(np.rint(np.asarray(x) * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """One image (C, H, W) in [0,1] as a PNG file."""
    Image.fromarray(to_uint8(image[None])[0]).save(path)


def save_class_samples(x: np.ndarray, labels: np.ndarray, index: np.ndarray, classes: Sequence[str],
                       out_dir: str | os.PathLike, per_class: int) -> int:
    """Save the first `per_class` images (x: (N,C,H,W) in [0,1]) of each class; return how many were written.
    Samples that are not images (SPEC 5's 500-d sphere vectors) leave the folder empty."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if np.ndim(x) != 4:
        return 0
    pixels = to_uint8(x)
    written = 0
    for c, name in enumerate(classes):
        folder = out_dir / f"{c}_{name}"
        folder.mkdir(exist_ok=True)
        for i in np.flatnonzero(labels == c)[:per_class]:
            Image.fromarray(pixels[i]).save(folder / f"{int(index[i])}.png")
            written += 1
    return written
