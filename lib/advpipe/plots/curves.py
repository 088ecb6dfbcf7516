"""Accuracy-robustness curves A(eps) with the area above chance shaded (SPEC 2 ARA); robustness curves (robust
accuracy vs eps) with eps50 marked (SPEC 5)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib.ticker import MaxNLocator

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


def _curve_xy(curve: Any) -> tuple[np.ndarray, np.ndarray]:
    """(eps, robust accuracy) sorted by eps, from a curve table (columns eps, robust_accuracy) or an (eps, acc) pair."""
    if hasattr(curve, "columns"):
        eps, acc = curve["eps"], curve["robust_accuracy"]
    else:
        eps, acc = curve
    eps, acc = np.asarray(eps, dtype=np.float64), np.asarray(acc, dtype=np.float64)
    if eps.ndim != 1 or eps.shape != acc.shape or len(eps) == 0:
        raise ValueError(f"curve: expected eps and accuracy of one equal, non-empty length, got {eps.shape} "
                         f"and {acc.shape}")
    order = np.argsort(eps, kind="stable")
    return eps[order], acc[order]


def plot_robustness_curves(curves: Mapping[str, Any] | Any, stem: str | os.PathLike, *,
                           eps50: Mapping[str, float | None] | float | None = None, title: str = "",
                           xlabel: str = "eps", steps: bool = False, dpi: int = 100) -> list[Path]:
    """Robust accuracy vs eps, one curve per label (SPEC 5 robust_<ep>.png); saves stem.pdf and stem.png.

    curves: {label: curve} or one curve, a curve being a table with columns eps and robust_accuracy (as from
    advpipe.metrics.curve_from_success / curve_from_distances) or an (eps, accuracy) pair. eps50: {label: value}
    (or one value for a single curve); each given value is marked on its curve (dotted vertical line and a
    diamond at the linearly interpolated accuracy, which is 1 - thr for the eps50 of the same curve) and shown
    in the legend. steps=True draws step functions (where="post", for step_curve_from_distances); otherwise
    lines with markers at the grid points. dpi: the PNG's resolution.
    """
    if not isinstance(curves, Mapping):
        curves = {"": curves}
        if eps50 is not None and not isinstance(eps50, Mapping):
            eps50 = {"": eps50}
    if not curves:
        raise ValueError("curves: nothing to plot")
    if eps50 is None:
        eps50 = {}
    elif not isinstance(eps50, Mapping):
        raise ValueError("eps50: give {label: value} when plotting several curves")
    unknown = sorted(set(eps50) - set(curves))
    if unknown:
        raise ValueError(f"eps50: labels {unknown} name no curve (curves: {sorted(curves)})")
    fig = new_figure((5.0, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, curve) in enumerate(curves.items()):
        eps, acc = _curve_xy(curve)
        colour = f"C{i}"
        e50 = eps50.get(label)
        if e50 is not None:
            e50 = float(e50)
            label = f"{label} (eps50 = {e50:.3g})" if label else f"eps50 = {e50:.3g}"
        if steps:
            ax.step(eps, acc, where="post", color=colour, label=label or None, linewidth=1.2)
        else:
            ax.plot(eps, acc, color=colour, label=label or None, linewidth=1.2, marker="o", markersize=3)
        if e50 is not None and np.isfinite(e50):
            if steps:  # the step function's value at e50
                y = acc[max(int(np.searchsorted(eps, e50, side="right")) - 1, 0)]
            else:
                y = np.interp(e50, eps, acc)
            ax.axvline(e50, color=colour, linestyle=":", linewidth=1.0)
            ax.plot([e50], [y], color=colour, marker="D", markersize=5, linestyle="none")
    ax.xaxis.set_major_locator(MaxNLocator(6))  # small-eps grids otherwise crowd the tick labels
    ax.set_xlabel(xlabel)
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return save_figure(fig, Path(stem), dpi=dpi, transparent=False)
