"""Bench an exact-mode figure (SPEC 1, visualize.py): one collection in index order vs vrapi's artist per point.

Both draw the same 4,000 clean points (10 classes, shuffled) on an 18-inch figure with font size 22,
tight layout, no axes, and save a PDF (vrapi writes PDFs only); ours is also timed writing PDF + PNG,
and approximate mode is timed for reference. Results go to bench/out/bench_plot.csv.

    python bench/bench_plot.py [--n 4000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from advpipe.plots import DARK, data_limits, plot_clean
from advpipe.plots.scatter import FIG_WIDTH, FONT_SIZE


def vrapi_exact(z: np.ndarray, labels: np.ndarray, names: list[str], path: Path) -> None:
    """vrapi's exact mode: one ax.scatter per point with zorder = index / N, looping over classes."""
    (x0, x1), (y0, y1) = data_limits(z)
    with matplotlib.rc_context({"font.size": FONT_SIZE}):
        fig = Figure(figsize=(FIG_WIDTH, FIG_WIDTH * (y1 - y0) / (x1 - x0)))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for c, name in enumerate(names):
            label = name
            for i in np.flatnonzero(labels == c):
                ax.scatter(z[i, 0], z[i, 1], c=[DARK[c]], label=label, zorder=i / len(z))
                label = None
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.axis("off")
        fig.tight_layout()
        fig.savefig(path, format="pdf", transparent=True)


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (vrapi's way: 1 run)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, args.n)
    z = (rng.normal(size=(args.n, 2)) + 2 * rng.normal(size=(10, 2))[labels]).astype(np.float32)
    names = [f"class{c}" for c in range(10)]

    with tempfile.TemporaryDirectory(prefix="bench_plot_") as tmp:
        d = Path(tmp)
        plot_clean(z, labels, names, d / "warm", legend=False)  # font cache, imports
        rows = [
            dict(method="ours exact, pdf", seconds=best_of(
                lambda: plot_clean(z, labels, names, d / "a", False, formats=("pdf",)), args.repeats)),
            dict(method="ours exact, pdf + png (dpi 100)", seconds=best_of(
                lambda: plot_clean(z, labels, names, d / "b", False), args.repeats)),
            dict(method="ours approximate, pdf", seconds=best_of(
                lambda: plot_clean(z, labels, names, d / "c", False, True, formats=("pdf",)), args.repeats)),
            dict(method="vrapi exact (artist per point), pdf", seconds=best_of(
                lambda: vrapi_exact(z, labels, names, d / "v.pdf"), 1)),
        ]
    table = pd.DataFrame(rows).assign(points=args.n)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "bench_plot.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ours, vrapi = rows[0]["seconds"], rows[3]["seconds"]
    print(f"exact pdf: vrapi / ours = {vrapi / ours:.1f}x; target < 2 s: {'met' if ours < 2 else 'MISSED'} "
          f"({ours:.2f} s; with png {rows[1]['seconds']:.2f} s)")


if __name__ == "__main__":
    main()
