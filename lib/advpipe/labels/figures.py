"""Label images: each label type's class tensors side by side (rows: label types, columns: classes)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from advpipe.plots.figures import new_figure, save_figure


def _as_image(tensor: np.ndarray) -> np.ndarray:
    """2-D view of one class tensor: vectors as a 1-row image, >2-D tensors with leading axes stacked."""
    t = np.asarray(tensor, dtype=np.float64)
    if t.ndim == 0:
        return t.reshape(1, 1)
    if t.ndim == 1:
        return t[None, :]
    return t.reshape(-1, t.shape[-1])


def plot_label_images(labels: Mapping[str, np.ndarray], stem: str | os.PathLike,
                      class_names: Sequence[str] | None = None, max_classes: int = 10,
                      cell: float = 0.9) -> list[Path]:
    """One row per label type, one panel per class (first max_classes); colour scale per label type."""
    names = list(labels)
    if not names:
        raise ValueError("plot_label_images: no labels given")
    cols = min(max_classes, max(len(np.asarray(a)) for a in labels.values()))
    fig = new_figure((cell * cols + 1.0, cell * len(names) + 0.5))
    for r, name in enumerate(names):
        arr = np.asarray(labels[name], dtype=np.float64)
        vmin, vmax = float(arr.min()), float(arr.max())
        for c in range(min(cols, len(arr))):
            ax = fig.add_subplot(len(names), cols, r * cols + c + 1)
            ax.imshow(_as_image(arr[c]), cmap="viridis", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1,
                      interpolation="nearest", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(class_names[c] if class_names is not None else str(c), fontsize=6)
            if c == 0:
                ax.set_ylabel(name, fontsize=6)
    fig.subplots_adjust(left=0.08, right=0.99, top=0.93, bottom=0.01, wspace=0.05, hspace=0.15)
    return save_figure(fig, Path(stem), dpi=150, transparent=False)
