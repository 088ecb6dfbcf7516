"""Stage run_cost: what a run cost, rule by rule, read from Snakemake's benchmark files (issue 16).

Every job writes benchmarks/<...>.tsv (one row per repeat: s, max_rss in MB, ...). A file belongs to the rule whose
benchmark pattern it matches; the table has one row per rule: jobs, total, mean and max seconds, peak RSS in MB.
A file no rule's pattern matches (a rule renamed since) is kept, under its folder's name in brackets.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from advpipe.io.tables import write_csv
from advpipe.plots.figures import new_figure, save_figure

COLUMNS = ["rule", "jobs", "total_s", "mean_s", "max_s", "max_rss_mb"]
_WILDCARD = re.compile(r"\{\s*(\w+)\s*(?:,((?:[^{}]|\{[^{}]*\})*))?\}")


def pattern_regex(pattern: str) -> re.Pattern:
    """A Snakemake file pattern ('benchmarks/plot/{model}/{attack}.tsv', '{x,[a-z]+}') as an anchored regex."""
    parts, last = [], 0
    for m in _WILDCARD.finditer(pattern):
        parts.append(re.escape(pattern[last:m.start()]))
        parts.append(f"(?:{m.group(2)})" if m.group(2) else ".+")
        last = m.end()
    parts.append(re.escape(pattern[last:]))
    return re.compile("".join(parts) + r"\Z")


def _literal_length(pattern: str) -> int:
    return len(_WILDCARD.sub("", pattern))


def rule_of(path: str, patterns: Mapping[str, str]) -> str:
    """The rule whose benchmark pattern matches `path` (the most literal pattern where several do); else
    '[<first folder>]'."""
    matching = [(_literal_length(p), rule) for rule, p in patterns.items() if pattern_regex(p).match(path)]
    if matching:
        return max(matching)[1]
    parts = Path(path).parts
    return f"[{parts[1] if len(parts) > 2 else Path(path).stem}]"


def read_benchmark(path: str | os.PathLike) -> tuple[float, float]:
    """(seconds, max_rss MB) of one benchmark file: the mean over its repeats; max_rss NaN where not measured
    (Snakemake writes NA or '-' then). ValueError naming the file when it has no 's' column or no row."""
    table = pd.read_csv(path, sep="\t")
    if "s" not in table.columns or table.empty:
        raise ValueError(f"{path}: not a Snakemake benchmark file (expected a tab-separated table with a column 's' "
                         f"and a row per repeat; got columns {list(table.columns)}, {len(table)} rows)")
    seconds = pd.to_numeric(table["s"], errors="coerce")
    if seconds.isna().any():
        raise ValueError(f"{path}: column 's' has non-numeric values {table['s'].tolist()}")
    rss = pd.to_numeric(table.get("max_rss", pd.Series([np.nan])), errors="coerce")
    return float(seconds.mean()), float(rss.max()) if rss.notna().any() else float("nan")


def run_cost_table(benchmarks: str | os.PathLike, patterns: Mapping[str, str]) -> pd.DataFrame:
    """One row per rule (COLUMNS), the costliest first, from every benchmarks/**/*.tsv. The paths matched against
    `patterns` are relative to the folder's parent (the working directory): 'benchmarks/...'."""
    root = Path(benchmarks)
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        rel = (Path(root.name) / path.relative_to(root)).as_posix()
        seconds, rss = read_benchmark(path)
        rows.append({"rule": rule_of(rel, patterns), "s": seconds, "rss": rss})
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    jobs = pd.DataFrame(rows)
    table = jobs.groupby("rule").agg(jobs=("s", "size"), total_s=("s", "sum"), mean_s=("s", "mean"),
                                     max_s=("s", "max"), max_rss_mb=("rss", "max")).reset_index()
    table = table.sort_values(["total_s", "rule"], ascending=[False, True], kind="stable").reset_index(drop=True)
    return table[COLUMNS].round({"total_s": 3, "mean_s": 3, "max_s": 3, "max_rss_mb": 1})


def plot_run_cost(table: pd.DataFrame, stem: str | os.PathLike, dpi: int = 100) -> list[Path]:
    """Horizontal bars of each rule's total seconds (costliest on top), the job count beside each bar."""
    fig = new_figure((7.0, 1.2 + 0.3 * max(len(table), 1)))
    ax = fig.add_subplot(1, 1, 1)
    rules = list(table["rule"])[::-1]
    totals = list(table["total_s"])[::-1]
    ax.barh(range(len(rules)), totals, color="tab:blue")
    ax.set_yticks(range(len(rules)), rules)
    for y, (total, jobs) in enumerate(zip(totals, list(table["jobs"])[::-1])):
        ax.annotate(f" {int(jobs)} job{'s' if jobs != 1 else ''}", (total, y), va="center", fontsize=8)
    ax.set_xlabel("wall-clock seconds, all jobs of the rule")
    ax.set_title(f"run cost: {table['jobs'].sum()} jobs, {table['total_s'].sum():.0f} s in all")
    ax.margins(x=0.15)
    fig.tight_layout()
    return save_figure(fig, Path(stem), dpi=dpi, transparent=False)


def run(benchmarks: str | os.PathLike, patterns: Mapping[str, str], out_csv: str | os.PathLike,
        figure_stem: str | os.PathLike, dpi: int = 100, log=print) -> pd.DataFrame:
    table = run_cost_table(benchmarks, patterns)
    write_csv(table, out_csv)
    plot_run_cost(table, figure_stem, dpi)
    log(f"{int(table['jobs'].sum()) if len(table) else 0} benchmark files of {len(table)} rules -> {out_csv}")
    return table
