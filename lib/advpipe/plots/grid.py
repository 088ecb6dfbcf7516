"""Image grids: rows of images with column titles (SPEC 2 explanation images side by side)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from advpipe.plots.figures import new_figure, save_figure


def plot_image_grid(images: np.ndarray, row_titles: Sequence[str], col_titles: Sequence[str],
                    stem: str | os.PathLike, cell: float = 1.1) -> list[Path]:
    """images: (rows, cols, C, H, W) in [0,1] (clipped for display); one panel per image, no axes."""
    rows, cols = images.shape[:2]
    fig = new_figure((cell * cols + 0.8, cell * rows + 0.5))
    pixels = np.clip(images, 0, 1).transpose(0, 1, 3, 4, 2)
    for r in range(rows):
        for c in range(cols):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1)
            img = pixels[r, c]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_titles[c], fontsize=6)
            if c == 0:
                ax.set_ylabel(row_titles[r], fontsize=6)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.93, bottom=0.01, wspace=0.05, hspace=0.15)
    return save_figure(fig, Path(stem), dpi=150, transparent=False)
