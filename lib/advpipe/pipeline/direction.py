"""Stage direction_table: one group of SPEC 5's README table: per model its clean accuracy, eps50 under each
attack (from the robustness rule's files) and its mean alignment alpha_dx, alpha_x (from the alignment rule's);
and the figure of eps50 against alpha_dx. Reads files only."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from advpipe.io.tables import write_csv
from advpipe.plots.figures import new_figure, save_figure


def read_one_row(path: str | os.PathLike, columns: Sequence[str]) -> pd.Series:
    """The single row of a summary CSV; ValueError naming the file when it is not one row with those columns."""
    table = pd.read_csv(path)
    missing = sorted(set(columns) - set(table.columns))
    if len(table) != 1 or missing:
        raise ValueError(f"{path}: expected one row with columns {list(columns)}; got {len(table)} rows"
                         + (f", missing {missing}" if missing else ""))
    return table.iloc[0]


def table(models: Sequence[str], attacks: Sequence[str], alignment: Sequence[str], eps50: Sequence[str]) -> pd.DataFrame:
    """One row per model: accuracy, alpha_dx, alpha_x, dx_source, then eps50_<attack> per attack (files in the
    order of models, and of models x attacks)."""
    rows = []
    for i, model in enumerate(models):
        a = read_one_row(alignment[i], ("accuracy", "alpha_dx", "alpha_x", "dx_source"))
        row = {"model": model, "accuracy": a["accuracy"], "alpha_dx": a["alpha_dx"], "alpha_x": a["alpha_x"],
               "dx_source": a["dx_source"]}
        for j, attack in enumerate(attacks):
            row[f"eps50_{attack}"] = read_one_row(eps50[i * len(attacks) + j], ("eps50",))["eps50"]
        rows.append(row)
    return pd.DataFrame(rows)


def plot(summary: pd.DataFrame, attacks: Sequence[str], stem: str | os.PathLike, title: str, dpi: int = 100) -> None:
    """One panel per attack: eps50 (x) against alpha_dx (y, alpha_x where no dx), a labelled point per model."""
    panels = max(len(attacks), 1)
    fig = new_figure((3.4 * panels, 3.2))
    measure = "alpha_dx" if summary["alpha_dx"].notna().any() else "alpha_x"
    for k, attack in enumerate(attacks or [None]):
        ax = fig.add_subplot(1, panels, k + 1)
        x = summary[f"eps50_{attack}"] if attack else pd.Series(np.zeros(len(summary)))
        for i, row in summary.reset_index(drop=True).iterrows():
            ax.scatter(x.iloc[i], row[measure], color=f"C{i}", label=row["model"])
        ax.set_xlabel(f"eps50 ({attack})" if attack else "eps50")
        ax.set_ylabel(measure)
        ax.set_title(title if k == 0 else attack or "")
        if k == 0:
            ax.legend(frameon=False, fontsize="x-small")
    fig.tight_layout()
    save_figure(fig, Path(stem), dpi=dpi, transparent=False)


def run(*, models: Sequence[str], attacks: Sequence[str], alignment: Sequence[str], eps50: Sequence[str],
        out_table: str, figure_stem: str, title: str, dpi: int = 100, log=print) -> pd.DataFrame:
    summary = table(models, attacks, alignment, eps50)
    write_csv(summary, out_table)
    plot(summary, attacks, figure_stem, title, dpi)
    log(summary.to_string(index=False))
    return summary
