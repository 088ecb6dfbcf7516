"""Tidy CSV tables, written atomically."""
from __future__ import annotations

import os

import pandas as pd

from advpipe.io.atomic import atomic_path


def write_csv(df: pd.DataFrame, path: str | os.PathLike, index: bool = False) -> None:
    """Write `df` as CSV at `path` via a temporary file (floats with full precision)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index, float_format="%.10g")
