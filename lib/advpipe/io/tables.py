"""Tidy CSV tables, written atomically."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from advpipe.io.atomic import atomic_path


def write_csv(df: pd.DataFrame, path: str | os.PathLike, index: bool = False) -> None:
    """Write `df` as CSV at `path` via a temporary file (floats with full precision)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index, float_format="%.10g")


def write_html(df: pd.DataFrame, path: str | os.PathLike, title: str, note: str = "") -> None:
    """`df` as a standalone HTML page (the Snakemake report shows .html results inline; a .csv only as a download),
    written atomically. Empty cells print as blank, floats with 4 significant digits."""
    import html

    table = df.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0, classes="advpipe")
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;font-size:13px;margin:1em}table{border-collapse:collapse}"
            "th,td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}th{background:#f3f3f3}"
            f"</style></head><body><h3>{html.escape(title)}</h3>"
            + (f"<p>{html.escape(note)}</p>" if note else "") + table + "</body></html>\n")
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
