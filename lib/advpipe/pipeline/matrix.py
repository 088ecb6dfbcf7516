"""Stage matrix (issue 16): every model of every study under every metric that applies, in one long table, read
from the dumps the shared rules wrote (pipeline/matrix_plan.py names them); nothing is attacked here.

Rows: (model, metric, at, value, sd, n, seeds, flag, source, reason). `at` says where a metric was read (an eps
of a grid, a LESCI defense, an attack and its peer); a seed copy's rows join its model's: value is the mean over
the copies, sd their standard deviation (empty for one copy). A metric that does not apply has one row with an
empty value and the reason."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from advpipe.io.h5 import DumpError, read_attrs, read_dump
from advpipe.io.tables import write_csv, write_html
from advpipe.pipeline.battery import Outcomes, rising_flag
from advpipe.pipeline.direction import read_one_row
from advpipe.pipeline.robustness import curve_eps50, load_curve
from advpipe.pipeline.score import score_table
from advpipe.plots.figures import new_figure, save_figure

COLUMNS = ("model", "metric", "at", "value", "sd", "n", "seeds", "flag", "source", "reason")
# The heat map's columns: one number per model and metric
SCALARS = ("accuracy", "eps50_linf", "eps50_l2", "ara_attack", "ara_btr", "alpha_x", "alpha_dx", "pop",
           "lesci_accuracy")


def _row(metric: str, value: float, n: int, source: str, at: str = "", flag: Any = None) -> dict[str, Any]:
    return {"metric": metric, "at": at, "value": float(value), "n": int(n), "flag": flag, "source": source}


def _grid_rows(norm: str, path: str) -> list[dict[str, Any]]:
    """Robust accuracy at each eps of the grid (a minimal attack: at its eps attr, else 8 points up to its reach)
    and eps50 (SPEC 5's definition, shared with the robustness rule)."""
    curve, clean_accuracy, info = load_curve(path)
    value, _, _ = curve_eps50(curve, clean_accuracy)
    points = curve
    if info["kind"] == "step":
        eps = np.asarray(read_attrs(path)["eps"], dtype=float).ravel()
        eps = eps[np.isfinite(eps)] if np.isfinite(eps).all() and len(eps) else np.linspace(0, info["eps_max"], 9)[1:]
        idx = np.searchsorted(curve["eps"].to_numpy(), eps, side="right") - 1
        points = pd.DataFrame({"eps": eps, "robust_accuracy": curve["robust_accuracy"].to_numpy()[np.maximum(idx, 0)],
                               "n": curve["n"].iloc[0]})
    n = int(curve["n"].iloc[0])
    rows = [_row(f"robust_accuracy_{norm}", r.robust_accuracy, n, path, at=f"eps={r.eps:.6g}")
            for r in points.itertuples()]
    return rows + [_row(f"eps50_{norm}", value, n, path)]


def _success_rows(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = read_dump(path, ["index", "clean_correct", "success_eps"])
    eps = np.atleast_1d(np.asarray(read_attrs(path)["eps"], dtype=float))
    return arrays["index"], eps, arrays["success_eps"].astype(bool) | ~arrays["clean_correct"].astype(bool)[:, None]


def _masking_rows(files: Mapping[str, Any], margin: float, zero_share: float) -> list[dict[str, Any]]:
    """The gradient-masking checks (the battery's, on the matrix's dumps): the black-box attack beating the
    white-box one at an eps of both grids on the images both attacked; robust accuracy rising with eps on the
    white-box grid; exactly zero input gradients (the alignment rule's share)."""
    rows = []
    if "linf" in files:
        index, eps, fooled = _success_rows(files["linf"])
        if "black_box" in files:
            b_index, b_eps, b_fooled = _success_rows(files["black_box"])
            common, wi, bi = np.intersect1d(index, b_index, return_indices=True)
            shared = [(k, j) for k, e in enumerate(eps) for j, be in enumerate(b_eps) if math.isclose(e, be)]
            # robust accuracy white-box minus black-box: > 0 where the black box fools images the gradients missed
            gaps = [(float(b_fooled[bi, j].mean() - fooled[wi, k].mean()), eps[k]) for k, j in shared]
            if gaps and len(common):
                gap, at = max(gaps)
                rows.append(_row("masking_black_box", gap, len(common), f"{files['linf']};{files['black_box']}",
                                 at=f"eps={at:.6g}", flag=bool(gap > margin)))
        out = Outcomes(name=Path(files["linf"]).stem, attack={"method": "pgd"}, eps=eps, success=fooled,
                       l2=np.zeros_like(fooled, dtype=float), minimal=False)
        rise = rising_flag({out.name: out})
        if not math.isnan(rise["value"]):
            rows.append(_row("masking_rising", rise["value"], len(fooled), files["linf"], flag=bool(rise["fired"])))
    summary = read_one_row(files["alignment"], ("zero_gradient_share", "n"))
    share = float(summary["zero_gradient_share"])
    rows.append(_row("masking_zero_gradient", share, summary["n"], files["alignment"], flag=bool(share > zero_share)))
    return rows


def copy_rows(files: Mapping[str, Any], metrics: Sequence[str], margin: float, zero_share: float
              ) -> list[dict[str, Any]]:
    """Every metric of `metrics` that one model copy has a source for."""
    rows: list[dict[str, Any]] = []
    want = set(metrics)
    if "accuracy" in want:
        correct = read_dump(files["accuracy"], ["correct"])["correct"].astype(bool)
        rows.append(_row("accuracy", correct.mean(), len(correct), files["accuracy"]))
    for norm in ("linf", "l2"):
        if norm in files and want & {f"robust_accuracy_{norm}", f"eps50_{norm}"}:
            rows += [r for r in _grid_rows(norm, files[norm]) if r["metric"] in want]
    if want & {"ara_attack", "ara_btr"} and "ara" in files:
        ara = read_one_row(files["ara"], ("attack_ara", "btr_ara", "n_images"))
        rows += [_row(f"ara_{k}", ara[f"{k}_ara"], ara["n_images"], files["ara"]) for k in ("attack", "btr")
                 if f"ara_{k}" in want]
    if want & {"alpha_x", "alpha_dx"}:
        a = read_one_row(files["alignment"], ("alpha_x", "alpha_dx", "n"))
        rows += [_row(k, a[k], a["n"], files["alignment"]) for k in ("alpha_x", "alpha_dx")
                 if k in want and not pd.isna(a[k])]
    if "pop" in want and "pop" in files:
        p = files["pop"]
        score = score_table([{"model": "m", "attack": "a", "projection": "p", "trial": 0, "path": p["projection"],
                              "clean": p["clean"], "attack_path": p["attack"]}])
        n = len(read_dump(p["attack"], ["index"])["index"])
        rows.append(_row("pop", score["value"].iloc[0], n, p["projection"]))
    if "lesci_accuracy" in want:
        for defended, path in files.get("lesci", {}).items():
            t = read_one_row(path, ("accuracy", "n"))
            rows.append(_row("lesci_accuracy", t["accuracy"], t["n"], path, at=defended))
    if "masking" in want:
        rows += _masking_rows(files, margin, zero_share)
    if "drift" in want and "drift" in files:
        table = pd.read_csv(files["drift"])
        missing = {"attack", "peer", "agreement", "n", "flag"} - set(table.columns)
        if missing:
            raise ValueError(f"{files['drift']}: missing columns {sorted(missing)}")
        rows += [_row("drift", r.agreement, r.n, files["drift"], at=f"{r.attack} vs {r.peer}", flag=bool(r.flag))
                 for r in table.itertuples()]
    return rows


def aggregate(model: str, per_copy: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (metric, at): the mean over the copies that have it, their sd (ddof 1; NaN for one), the
    copies' first n, the number of copies, any flag, the sources."""
    frames = [pd.DataFrame(rows).assign(copy=c) for c, rows in per_copy.items() if rows]
    if not frames:
        return []
    long = pd.concat(frames, ignore_index=True)
    out = []
    for (metric, at), g in long.groupby(["metric", "at"], sort=False):
        values = g["value"].to_numpy(float)
        flags = [f for f in g["flag"] if f is not None and not (isinstance(f, float) and math.isnan(f))]
        out.append({"model": model, "metric": metric, "at": at, "value": float(values.mean()),
                    "sd": float(values.std(ddof=1)) if len(values) > 1 else math.nan, "n": int(g["n"].iloc[0]),
                    "seeds": len(values), "flag": (bool(any(flags)) if flags else None),
                    "source": ";".join(g["source"]), "reason": ""})
    return out


def matrix_table(plan: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], margin: float = 0.05,
                 zero_share: float = 0.1, log=print) -> pd.DataFrame:
    """The long table (module docstring) over the plan's models, in its order."""
    rows = []
    for model, copies in tqdm(plan.items(), desc="matrix", unit="model"):
        per_copy = {}
        for copy, spec in copies.items():
            try:
                per_copy[copy] = copy_rows(spec["files"], metrics, margin, zero_share)
            except (DumpError, ValueError, KeyError, OSError) as err:
                raise type(err)(f"matrix, model {copy!r}: {err}") from err
        rows += aggregate(model, per_copy)
        reasons = next(iter(copies.values()))["reasons"]
        have = {r["metric"] for r in rows if r["model"] == model}
        for metric in metrics:
            covered = have & ({metric} | ({"masking_black_box", "masking_rising", "masking_zero_gradient"}
                                         if metric == "masking" else set()))
            if not covered:
                reason = reasons.get(metric)
                if reason is None:
                    raise ValueError(f"matrix, model {model!r}: no value and no reason for metric {metric!r}")
                rows.append({"model": model, "metric": metric, "at": "", "value": math.nan, "sd": math.nan, "n": 0,
                             "seeds": len(copies), "flag": None, "source": "", "reason": reason})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    log(f"matrix: {table['model'].nunique()} models, {int(table['value'].notna().sum())} values, "
        f"{int((table['reason'] != '').sum())} not applicable")
    return table


def scalar_view(table: pd.DataFrame, column: str = "value") -> pd.DataFrame:
    """model x metric of the one-number metrics (the first LESCI defense of a model): `column` value or sd."""
    rows = table[table["metric"].isin(SCALARS) & table["value"].notna()]
    wide = rows.drop_duplicates(["model", "metric"]).pivot(index="model", columns="metric", values=column)
    return wide.reindex(index=list(dict.fromkeys(table["model"])),
                        columns=[m for m in SCALARS if m in wide.columns]).astype(float)


def agreement(wide: pd.DataFrame) -> pd.DataFrame:
    """Spearman rank correlation between every two metrics over the models both cover (where do the studies'
    metrics order the models differently?), with the number of models."""
    rows = []
    cols = list(wide.columns)
    for i, a in enumerate(cols):
        for b in cols[i + 1:]:
            both = wide[[a, b]].dropna()
            rho = both[a].rank().corr(both[b].rank()) if len(both) > 2 else math.nan
            rows.append({"metric_a": a, "metric_b": b, "spearman": rho, "models": len(both)})
    return pd.DataFrame(rows, columns=["metric_a", "metric_b", "spearman", "models"])


def flags(table: pd.DataFrame) -> pd.DataFrame:
    """The checks' rows (masking and drift), flagged or not."""
    checks = table[table["metric"].str.startswith(("masking_", "drift"))]
    return checks[["model", "metric", "at", "value", "n", "flag", "source"]].reset_index(drop=True)


def heatmap(wide: pd.DataFrame, sd: pd.DataFrame, stem: str | os.PathLike, dpi: int = 100) -> None:
    """Colours: each metric min-max scaled over the models (their units differ); numbers: the values (+- the sd
    over seed copies); grey: does not apply (matrix.csv's reason says why)."""
    import seaborn as sns

    scaled = (wide - wide.min()) / (wide.max() - wide.min()).replace(0, 1)
    text = wide.copy().astype(object)
    for model in wide.index:
        for metric in wide.columns:
            v, e = wide.loc[model, metric], sd.loc[model, metric] if metric in sd.columns else math.nan
            text.loc[model, metric] = "" if pd.isna(v) else f"{v:.3g}" + ("" if pd.isna(e) else f"\n±{e:.2g}")
    fig = new_figure((1.0 * max(len(wide.columns), 3) + 3.0, 0.42 * max(len(wide), 3) + 1.8))
    ax = fig.add_subplot(1, 1, 1)
    sns.heatmap(scaled, annot=text.to_numpy(), fmt="", cmap="viridis", ax=ax, linewidths=0.5,
                cbar_kws={"label": "per metric: lowest to highest model"}, annot_kws={"fontsize": 6})
    ax.set_facecolor("0.8")  # NaN cells are left unpainted: the axes colour shows through
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title("Every model under every metric (grey: does not apply; matrix.csv says why)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, Path(stem), dpi=dpi, transparent=False)


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """model x metric, each cell "value ± sd" (robust accuracy: at every eps), or "n/a: reason": the report's view
    of the matrix."""
    in_column = table["metric"].str.startswith(("robust_accuracy", "drift"))  # one column per eps / peer

    def cell(r, own_column: bool) -> str:
        if pd.isna(r.value):
            return f"n/a: {r.reason}"
        text = f"{r.value:.4g}" + ("" if pd.isna(r.sd) else f" ± {r.sd:.2g}")
        return text + ("" if own_column or not r.at else f" ({r.at})") + (" FLAGGED" if r.flag is True else "")

    at = table["at"].fillna("")
    t = table.assign(column=table["metric"] + at.where(in_column & (at != ""), "").map(lambda a: f" [{a}]" if a else ""),
                     cell=[cell(r, own) for r, own in zip(table.itertuples(), in_column)])
    wide = t.pivot_table(index="model", columns="column", values="cell", aggfunc="; ".join, sort=False)
    wide.columns.name = None
    return wide.reindex(index=list(dict.fromkeys(table["model"]))).reset_index()


def run(*, plan: Mapping[str, Any], metrics: Sequence[str], black_box_margin: float, zero_gradient_share: float,
        out_csv: str, out_flags: str, out_agreement: str, out_html: str, out_flags_html: str, figure_stem: str,
        models: Sequence[str] | None = None, dpi: int = 100, log=print) -> pd.DataFrame:
    """`models`: the rows' order (the plan's keys come sorted through Snakemake's canonical params)."""
    plan = {m: plan[m] for m in (models or plan)}
    table = matrix_table(plan, metrics, black_box_margin, zero_gradient_share, log=log)
    wide = scalar_view(table)
    write_csv(table, out_csv)
    write_csv(flags(table), out_flags)
    write_csv(agreement(wide), out_agreement)
    seeds = table.groupby("model")["seeds"].max()
    write_html(readable(table), out_html, "Every model under every metric",
               "value ± sd over seed copies (" + ", ".join(f"{m}: {n}" for m, n in seeds.items() if n > 1)
               + "); n/a: why the metric does not apply; the long form is results/matrix/matrix.csv")
    write_html(flags(table), out_flags_html, "Gradient-masking and implementation-drift checks",
               "flag True: masking_black_box (black-box robust accuracy below white-box by more than the margin), "
               "masking_rising (robust accuracy rising with eps), masking_zero_gradient (share of exactly zero "
               "input gradients), drift (agreement with a peer library below the threshold)")
    heatmap(wide, scalar_view(table, "sd"), figure_stem, dpi)
    fired = table[table["flag"] == True]  # noqa: E712 (a column of True/False/None)
    for r in fired.itertuples():
        log(f"flag: {r.model} {r.metric} {r.at} = {r.value:.4g}")
    return table
