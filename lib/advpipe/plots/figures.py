"""What every figure shares: an Agg figure outside pyplot, safe file names, atomic PDF + PNG saving."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from advpipe.io.atomic import atomic_path


def new_figure(size: tuple[float, float]) -> Figure:
    """A Figure on its own Agg canvas: no pyplot, so no global state shared between figures or threads."""
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def safe_name(name: str) -> str:
    """A class name usable in a file name (vrapi uses names as they are; '/' or spaces would break paths)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def save_figure(fig: Figure, stem: Path, formats: Sequence[str] = ("pdf", "png"), dpi: int = 100,
                transparent: bool = True) -> list[Path]:
    """Save fig as stem.<fmt> for each format, atomically (transparent by default, like vrapi); returns the paths."""
    paths = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        with atomic_path(path) as tmp:
            # The temporary name ends in .tmp, so the format must be given; no CreationDate keeps PDFs
            # byte-identical across runs.
            meta = {"CreationDate": None} if fmt == "pdf" else None
            fig.savefig(tmp, format=fmt, dpi=dpi, transparent=transparent, metadata=meta)
        paths.append(path)
    return paths


