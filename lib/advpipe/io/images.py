"""Sample images as PNG files, one folder per class (SPEC 1: images/<c>_<name>/<idx>.png)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def save_class_samples(x: np.ndarray, labels: np.ndarray, index: np.ndarray, classes: Sequence[str],
                       out_dir: str | os.PathLike, per_class: int) -> int:
    """Save the first `per_class` images (x: (N,C,H,W) in [0,1]) of each class; return how many were written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    written = 0
    for c, name in enumerate(classes):
        folder = out_dir / f"{c}_{name}"
        folder.mkdir(exist_ok=True)
        for i in np.flatnonzero(labels == c)[:per_class]:
            img = pixels[i, :, :, 0] if pixels.shape[-1] == 1 else pixels[i]
            Image.fromarray(img).save(folder / f"{int(index[i])}.png")
            written += 1
    return written
