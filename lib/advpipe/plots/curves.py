"""Accuracy-robustness curves A(eps) with the area above chance shaded (SPEC 2 ARA)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from advpipe.metrics.ara import ara, accuracy_curve
from advpipe.plots.figures import new_figure, save_figure


def plot_accuracy_robustness(distances: Mapping[str, np.ndarray], num_classes: int, title: str,
                             stem: str | os.PathLike, bins: int = 1000) -> list[Path]:
    """One step curve A(eps) = fraction of images whose minimal RMS perturbation exceeds eps, per kind
    (e.g. Attack, BTR); the area between the curve and chance (1/C), which is the ARA, is shaded."""
    fig = new_figure((5.0, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    chance = 1.0 / num_classes
    for i, (kind, d) in enumerate(distances.items()):
        eps, acc = accuracy_curve(d, bins=bins)
        colour = f"C{i}"
        label = f"{kind} ARA {ara(d, num_classes, bins=bins):.4g}"
        ax.step(eps, acc, where="pre", color=colour, label=label, linewidth=1.2)
        ax.fill_between(eps, chance, acc, where=acc > chance, step="pre", color=colour, alpha=0.2,
                        linewidth=0)
    ax.axhline(chance, color="0.4", linestyle="--", linewidth=0.8, label="chance")
    ax.set_xlabel("RMS perturbation eps")
    ax.set_ylabel("A(eps): accuracy at eps")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return save_figure(fig, Path(stem), transparent=False)
