"""vrapi's scatter figures of clean and adversarial 2-D projections (SPEC 1, visualize.py).

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot: no global
backend switch, no figure registry to leak, safe in any process. Every file is written to a temporary
name and renamed (advpipe.io.atomic.atomic_path).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from advpipe.plots.figures import new_figure, safe_name, save_figure

_TAB20 = np.asarray(matplotlib.colormaps["tab20"].colors)
DARK = _TAB20[0::2]   # (10, 3): clean points alone
LIGHT = _TAB20[1::2]  # (10, 3): clean points under the adversarial ones
FONT_SIZE = 22
FIG_WIDTH = 18.0      # inches; height follows the data aspect ratio
MARKER_SIZE = 36.0    # scatter's default s (points^2), as vrapi leaves it
LEGEND_KWARGS = {"markerscale": 2}
# Height bounds (inches) so a degenerate projection (a line) cannot ask for a figure too big to render.
_HEIGHT_RANGE = (1.0, 72.0)

Limits = tuple[tuple[float, float], tuple[float, float]]


def data_limits(*zs: np.ndarray, margin: float = 0.05) -> Limits:
    """Axis limits matplotlib's autoscale gives a scatter of all points in zs: data range plus 5% each side."""
    z = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1, 2) for a in zs])
    lims = []
    for lo, hi in zip(z.min(axis=0), z.max(axis=0)):
        pad = margin * (hi - lo) if hi > lo else max(abs(lo) * margin, 0.05)
        lims.append((float(lo - pad), float(hi + pad)))
    return lims[0], lims[1]


def _palette(palette: np.ndarray, classes: np.ndarray) -> np.ndarray:
    # tab20 has 10 pairs; more classes reuse them cyclically (vrapi has exactly 10).
    return palette[np.asarray(classes) % len(palette)]


@dataclass
class CleanPoints:
    """The clean-point artists of one axes: one collection (exact) or one per class (approximate)."""

    collections: list[PathCollection]
    classes: list[int] | None  # class of each collection in approximate mode; None in exact mode
    labels: np.ndarray         # (N,) class of each point, in drawing order

    def recolour(self, palette: np.ndarray) -> None:
        """Switch every clean point to `palette` (e.g. DARK -> LIGHT), keeping draw order."""
        if self.classes is None:
            self.collections[0].set_color(_palette(palette, self.labels))
        else:
            for coll, c in zip(self.collections, self.classes):
                coll.set_color(_palette(palette, np.array([c]))[0])


def scatter_clean(ax: Axes, z: np.ndarray, labels: np.ndarray, palette: np.ndarray,
                  approximate: bool = False) -> CleanPoints:
    """Draw clean points z (N, 2) coloured by class: exact draw order, or one scatter per class (SPEC 1)."""
    z, labels = np.asarray(z), np.asarray(labels)
    if approximate:
        # vrapi --approximate: one artist per class, so later classes cover earlier ones.
        classes = [int(c) for c in np.unique(labels)]
        colls = [ax.scatter(z[labels == c, 0], z[labels == c, 1], s=MARKER_SIZE, color=_palette(palette, [c])[0])
                 for c in classes]
        return CleanPoints(colls, classes, labels)
    # vrapi draws every point as its own artist with zorder = index / N, so points are stacked in
    # dataset order (shuffled classes) and no class sits on top. One PathCollection draws its markers
    # in offset order, later over earlier, so offsets in index order give exactly that stacking with
    # one artist instead of N (N artists make drawing, layout and saving orders of magnitude slower).
    # tests/test_plots.py checks the raster equals vrapi's. One caveat in PNGs: Agg draws a one-colour
    # collection (each of vrapi's points) with draw_markers, which snaps it to whole pixels; ours is
    # multi-colour, so markers sit at their exact sub-pixel positions (up to 1 px from vrapi's).
    coll = ax.scatter(z[:, 0], z[:, 1], s=MARKER_SIZE, c=_palette(palette, labels), edgecolors="face")
    return CleanPoints([coll], None, labels)


def _new_axes(limits: Limits) -> tuple[Figure, Axes]:
    (x0, x1), (y0, y1) = limits
    height = float(np.clip(FIG_WIDTH * (y1 - y0) / (x1 - x0), *_HEIGHT_RANGE))
    fig = new_figure((FIG_WIDTH, height))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.axis("off")
    return fig, ax


def _handle(color, label: str) -> Line2D:
    # A proxy artist: a legend entry that looks like a scatter marker without adding an artist to the axes.
    return Line2D([], [], linestyle="", marker="o", markersize=float(np.sqrt(MARKER_SIZE)), color=color, label=label)


def _class_handles(labels: np.ndarray, class_names: Sequence[str], palette: np.ndarray) -> list[Line2D]:
    return [_handle(_palette(palette, [c])[0], class_names[c]) for c in np.unique(labels)]


def _adv_handle(name: str) -> Line2D:
    return _handle("black", f"adversarial {name}")


def _save_pair(fig: Figure, ax: Axes, stem: Path | None, legend_stem: Path | None, handles: list[Line2D],
               formats: Sequence[str], dpi: int) -> list[Path]:
    """Save without legend at stem (if given), then with legend at legend_stem (if given), then drop the legend."""
    paths = save_figure(fig, stem, formats, dpi) if stem is not None else []
    if legend_stem is not None:
        leg = ax.legend(handles=handles, **LEGEND_KWARGS)
        paths += save_figure(fig, legend_stem, formats, dpi)
        leg.remove()
    return paths


def plot_clean(z: np.ndarray, labels: np.ndarray, class_names: Sequence[str], stem: Path, legend: bool,
               approximate: bool = False, *, limits: Limits | None = None, dpi: int = 100,
               formats: Sequence[str] = ("pdf", "png")) -> list[Path]:
    """vrapi's non_adversarial figure: clean points in dark tab20 by class; writes stem.pdf/.png (SPEC 1)."""
    with matplotlib.rc_context({"font.size": FONT_SIZE}):
        fig, ax = _new_axes(limits or data_limits(z))
        scatter_clean(ax, z, labels, DARK, approximate)
        fig.tight_layout()
        handles = _class_handles(np.asarray(labels), class_names, DARK)
        stem = Path(stem)
        return _save_pair(fig, ax, None if legend else stem, stem if legend else None, handles, formats, dpi)


def _scatter_adv(ax: Axes, adv_z: np.ndarray, adv_labels: np.ndarray, c: int) -> PathCollection:
    pts = np.asarray(adv_z)[np.asarray(adv_labels) == c]
    # zorder 2: above the clean points whatever their order (vrapi: default zorder over index/N < 1).
    return ax.scatter(pts[:, 0], pts[:, 1], s=MARKER_SIZE, color="black", zorder=2)


def plot_by_class(z: np.ndarray, labels: np.ndarray, adv_z: np.ndarray, adv_labels: np.ndarray,
                  class_names: Sequence[str], c: int, stem: Path, legend: bool, approximate: bool = False, *,
                  limits: Limits | None = None, dpi: int = 100,
                  formats: Sequence[str] = ("pdf", "png")) -> list[Path]:
    """vrapi's by-class figure: clean points light, adversarial points of true class c black on top (SPEC 1)."""
    with matplotlib.rc_context({"font.size": FONT_SIZE}):
        fig, ax = _new_axes(limits or data_limits(z, adv_z))
        scatter_clean(ax, z, labels, LIGHT, approximate)
        fig.tight_layout()
        _scatter_adv(ax, adv_z, adv_labels, c)
        handles = _class_handles(np.asarray(labels), class_names, LIGHT) + [_adv_handle(class_names[c])]
        stem = Path(stem)
        return _save_pair(fig, ax, None if legend else stem, stem if legend else None, handles, formats, dpi)


def plot_projection_figures(clean_z: np.ndarray, clean_labels: np.ndarray, adv_z: np.ndarray,
                            adv_true: np.ndarray, class_names: Sequence[str], out_dir: Path,
                            approximate: bool = False, *, dpi: int = 100,
                            formats: Sequence[str] = ("pdf", "png")) -> list[Path]:
    """All of vrapi's figures for one (attack, projection) in out_dir, from one drawing; returns paths (SPEC 1)."""
    out_dir = Path(out_dir)
    by_class = out_dir / "non_adversarial_and_adversarial_by_class"
    clean_labels = np.asarray(clean_labels)
    with matplotlib.rc_context({"font.size": FONT_SIZE}):
        # Limits from clean and adversarial points together, so every figure of the set shares axes.
        fig, ax = _new_axes(data_limits(clean_z, adv_z))
        clean = scatter_clean(ax, clean_z, clean_labels, DARK, approximate)
        fig.tight_layout()
        paths = _save_pair(fig, ax, out_dir / "non_adversarial", out_dir / "non_adversarial_with_legend",
                           _class_handles(clean_labels, class_names, DARK), formats, dpi)
        clean.recolour(LIGHT)
        light_handles = _class_handles(clean_labels, class_names, LIGHT)
        for c, name in enumerate(class_names):
            adv = _scatter_adv(ax, adv_z, adv_true, c)
            tag = f"{c}_{safe_name(name)}"
            paths += _save_pair(fig, ax, by_class / f"non_adversarial_and_adversarial_by_class_{tag}",
                                by_class / f"non_adversarial_and_adversarial_by_class_with_legend_{tag}",
                                light_handles + [_adv_handle(name)], formats, dpi)
            adv.remove()
    return paths
