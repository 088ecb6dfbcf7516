"""The studies' reference numbers (SPEC.md's tables, as data in config/reference/*.csv) beside the reproduced ones.

Each reference CSV is tidy: one row per (paper table, paper row, metric[, eps][, level]) with the number as SPEC.md
states it (`stated`, e.g. "99.7%") and as a number (`value`, a fraction for percentages), the paper run's scale
(dataset, architecture, epochs, n) and the SPEC.md section it was copied from (`source`). `load_references` refuses a
malformed file naming the file and line.

`join` pairs each reference row with the reproduced number of the run's study tables. Paper rows are mapped to the
run's models explicitly by the config section `references: {<table>: {<paper row>: <model>}}` (a projection name
for `vrapi_pop`); a row with no mapping, a study that did not run, or a metric or eps the run has not got comes out
with an empty `reproduced` and a `reason`. Nothing is matched by name similarity.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from advpipe.errors import InputError

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "config" / "reference"
STUDIES = ("vrapi", "explanations", "labels", "lesci", "direction")
COLUMNS = ("study", "table", "row", "metric", "eps", "level", "value", "stated", "dataset", "architecture", "epochs",
           "n", "source", "note")
REQUIRED = ("study", "table", "row", "metric", "source")
KEY = ("table", "row", "metric", "eps", "level")

# The reproduced table each reference table is compared with (None: no table of the run holds these numbers).
SOURCES: dict[str, str | None] = {
    "vrapi_pop": "vrapi",
    "explanations_readme": "explanations",
    "labels_attacks": "labels_attacks",
    "labels_entropy": "labels_attacks",
    "labels_overlap": "labels_attacks",
    "labels_validation": "labels_efficiency",
    "labels_data_efficiency": "labels_efficiency",
    "labels_data_efficiency_vgg19": "labels_efficiency",
    "labels_stats": "labels_stats",
    "direction_sphere": "direction",
    "direction_square": "direction",
    "direction_mnist35": "direction",
    "direction_mnist": "direction",
    "direction_cifar10": "direction",
    "lesci_alp": None,
    "direction_estimators": None,
}
NO_SOURCE_REASON = {
    "lesci_alp": "no table of the run holds these numbers (the ALP release's pgdll accuracies on Tiny ImageNet; "
                 "the LESCI study reports robustness curves and the battery instead)",
    "direction_estimators": "not joined: the run's estimators/<e>/similarity.csv is not among the reference inputs",
}
# Label tables whose rows are a label's series over data levels: the mapped model names the label; the level is the
# paper row's own (the model of that label at that level is the one compared).
SERIES_TABLES = ("labels_validation", "labels_data_efficiency", "labels_data_efficiency_vgg19")

OUT_COLUMNS = ("study", "table", "row", "metric", "eps", "level", "reference", "stated", "reproduced",
               "reproduced_model", "mapped_to", "reproduced_file", "reason", "source", "note",
               "paper_dataset", "paper_architecture", "paper_epochs", "paper_n",
               "run_dataset", "run_dataset_source", "run_architecture", "run_epochs", "run_n")


class ReferenceError(InputError, ValueError):
    """A reference CSV or the `references:` config section is malformed; the message names the file and line or
    the config key."""


# ---- loading --------------------------------------------------------------------------------------------------------
def reference_files(folder: str | os.PathLike = REFERENCE_DIR) -> list[Path]:
    files = sorted(Path(folder).glob("*.csv"))
    if not files:
        raise ReferenceError(f"{folder}: no reference CSV files (*.csv); expected config/reference/<study>.csv")
    return files


def parse_stated(stated: str) -> float | None:
    """The number SPEC.md states: '99.7%' -> 0.997, '.880' -> 0.88, 'N/A' or '' -> None."""
    s = stated.strip()
    if s in ("", "N/A"):
        return None
    return float(s[:-1]) / 100 if s.endswith("%") else float(s)


def _number(text: str, what: str, where: str, whole: bool = False) -> float | None:
    if text.strip() == "":
        return None
    try:
        x = float(text)
    except ValueError:
        raise ReferenceError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(x):
        raise ReferenceError(f"{where}: {what} {text!r} is not finite")
    if whole and (x != int(x) or x < 0):
        raise ReferenceError(f"{where}: {what} {text!r} is not a whole number >= 0")
    return x


def _check_row(row: Mapping[str, str], where: str) -> dict[str, Any]:
    for col in REQUIRED:
        if not (row.get(col) or "").strip():
            raise ReferenceError(f"{where}: empty {col!r}; every row needs {list(REQUIRED)}")
    if row["study"] not in STUDIES:
        raise ReferenceError(f"{where}: unknown study {row['study']!r}; expected one of {list(STUDIES)}")
    if not row["source"].startswith("SPEC.md"):
        raise ReferenceError(f"{where}: source {row['source']!r} does not cite SPEC.md (e.g. 'SPEC.md 5, ...')")
    value = _number(row["value"], "value", where)
    stated = row.get("stated") or ""
    try:
        parsed = parse_stated(stated)
    except ValueError:
        raise ReferenceError(f"{where}: stated {stated!r} is not a number, a percentage or N/A") from None
    if value is None and not (row.get("note") or "").strip():
        raise ReferenceError(f"{where}: empty value without a note; a row without a number says why in `note`")
    if parsed is not None and (value is None or not math.isclose(value, parsed, rel_tol=1e-9, abs_tol=1e-12)):
        raise ReferenceError(f"{where}: value {row['value']!r} disagrees with stated {stated!r} (= {parsed:g})")
    if parsed is None and value is not None and stated.strip():
        raise ReferenceError(f"{where}: value {row['value']!r} given for stated {stated!r}")
    out = {c: (row.get(c) or "").strip() for c in COLUMNS}
    out.update(value=value, eps=_number(row["eps"], "eps", where), level=_number(row["level"], "level", where),
               epochs=_number(row["epochs"], "epochs", where, whole=True), n=_number(row["n"], "n", where, whole=True))
    return out


def load_reference_file(path: str | os.PathLike) -> pd.DataFrame:
    """One reference CSV, checked: ReferenceError naming the file and line (header = line 1) of a bad row."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ReferenceError(f"{path}: line 1: missing column(s) {missing}; expected the columns {list(COLUMNS)}")
        rows = []
        for i, row in enumerate(reader):
            where = f"{path}: line {i + 2}"
            if None in row or any(v is None for v in row.values()):
                raise ReferenceError(f"{where}: {len(header)} columns expected, the row has a different count")
            rows.append({**_check_row(row, where), "_where": where})
    if not rows:
        raise ReferenceError(f"{path}: no rows")
    return pd.DataFrame(rows, columns=[*COLUMNS, "_where"])


def load_references(paths: Iterable[str | os.PathLike] | None = None) -> pd.DataFrame:
    """All reference rows (columns COLUMNS); None: every CSV of config/reference. A (table, row, metric, eps, level)
    given twice, in one file or two, is refused naming both places."""
    frames = [load_reference_file(p) for p in (reference_files() if paths is None else paths)]
    table = pd.concat(frames, ignore_index=True)
    seen: dict[tuple, str] = {}
    for where, *key in table[["_where", *KEY]].astype(str).itertuples(index=False):
        if tuple(key) in seen:
            raise ReferenceError(f"{where}: the same (table, row, metric, eps, level) as {seen[tuple(key)]}")
        seen[tuple(key)] = where
    return table.drop(columns="_where")


# ---- the run's side -------------------------------------------------------------------------------------------------
def attack_metric(attack: Mapping[str, Any]) -> str | None:
    """SPEC 5's column for an eps50 attack of the config: PGD L-inf / L2, or the Square attack; None otherwise."""
    if attack.get("method") == "square":
        return "eps50_square"
    if attack.get("method") == "pgd":
        return {"linf": "eps50_pgd_linf", "l2": "eps50_pgd_l2"}.get(attack.get("norm", "linf"))
    return None


def run_context(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the join needs from a validated config: the mapping (`references`), the scale of each model it names
    (and of the vrapi models), the direction groups with the SPEC 5 column of each attack. ReferenceError naming
    the config key when the mapping names a model (or, for vrapi_pop, a projection) the config does not have."""
    from advpipe.projections import PROJECTIONS

    mapping = config.get("references") or {}
    models = config.get("models") or {}
    if not isinstance(mapping, Mapping):
        raise ReferenceError(f"config key 'references': got {mapping!r}; expected {{table: {{paper row: model}}}}")
    for table, rows in mapping.items():
        if not isinstance(rows, Mapping):
            raise ReferenceError(f"config key 'references.{table}': got {rows!r}; expected {{paper row: model}}")
        known = PROJECTIONS if SOURCES.get(table) == "vrapi" else models
        for row, name in rows.items():
            if not isinstance(name, str) or name not in known:
                raise ReferenceError(f"config key 'references.{table}.{row}': {name!r} is not a "
                                     + ("projection" if known is PROJECTIONS else "model")
                                     + f" of the config; expected one of {sorted(known)}")
    vrapi = config.get("vrapi") or {}
    vrapi_models = list(vrapi.get("models", [])) if vrapi.get("enabled", True) else []
    named = [n for t, rows in mapping.items() if SOURCES.get(t) != "vrapi" for n in rows.values()] + vrapi_models
    scale = {}
    for name in dict.fromkeys(named):
        entry = models.get(name, {})
        base = entry.get("defense", {}).get("lesci", {}).get("base")  # a defended model: its base's data
        entry = models.get(base, entry) if base else entry
        dataset = entry.get("dataset")
        scale[name] = {"dataset": dataset, "dataset_source": (config.get("datasets") or {}).get(dataset, {}).get("source"),
                       "architecture": entry.get("arch"), "epochs": (entry.get("train") or {}).get("epochs")}
    direction = config.get("direction") or {}
    groups = direction.get("groups", {}) if direction.get("enabled", True) else {}
    attacks = config.get("attacks") or {}
    return {"mapping": {t: dict(rows) for t, rows in mapping.items()}, "scale": scale,
            "direction": {g: {"models": list(spec["models"]),
                              "attacks": {a: attack_metric(attacks.get(a, {})) for a in spec["attacks"]}}
                          for g, spec in groups.items()}}


def _read(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    table = pd.read_csv(path)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ReferenceError(f"{path}: reproduced table lacks column(s) {missing}; has {list(table.columns)}")
    return table


def reproduced_long(tables: Mapping[str, Any], context: Mapping[str, Any]) -> pd.DataFrame:
    """The run's study tables as one long table: kind (the SOURCES value), key (what a mapping names: a model, a
    projection, or a label for labels_stats), model, metric, eps, level, value, n, file.

    tables: {"vrapi": score_stats.csv, "explanations": ara.csv, "labels_attacks": attacks.csv,
    "labels_efficiency": data_efficiency.csv, "labels_stats": label_stats.csv, "direction": {group: <group>.csv}};
    a study that did not run is left out."""
    from advpipe.labels.study import label_model_name

    rows: list[dict[str, Any]] = []
    if tables.get("vrapi"):
        path = str(tables["vrapi"])
        t = _read(path, ["model", "projection", "mean_mean"])
        for model, block in t.groupby("model", sort=False):
            rank = block["mean_mean"].rank(ascending=False, method="min")
            for (_, r), k in zip(block.iterrows(), rank):
                for metric in [c for c in block.columns if c.startswith("mean_")]:
                    rows.append(dict(kind="vrapi", key=r["projection"], model=model, metric=metric, value=r[metric],
                                     file=path))
                rows.append(dict(kind="vrapi", key=r["projection"], model=model, metric="rank", value=float(k),
                                 file=path))
    if tables.get("explanations"):
        path = str(tables["explanations"])
        t = _read(path, ["model", "n_images", "accuracy", "attack_ara", "btr_ara"])
        for _, r in t.iterrows():
            for metric in ("accuracy", "attack_ara", "btr_ara"):
                rows.append(dict(kind="explanations", key=r["model"], model=r["model"], metric=metric,
                                 value=r[metric], n=r["n_images"], file=path))
    if tables.get("labels_attacks"):
        path = str(tables["labels_attacks"])
        t = _read(path, ["label", "level", "attack", "eps", "accuracy", "n_images"])
        for _, r in t.iterrows():
            model = label_model_name(r["label"], r["level"])
            rows.append(dict(kind="labels_attacks", key=model, model=model, metric=r["attack"], eps=r["eps"],
                             level=r["level"], value=r["accuracy"], n=r["n_images"], file=path, label=r["label"]))
    if tables.get("labels_efficiency"):
        path = str(tables["labels_efficiency"])
        t = _read(path, ["label", "level", "val_accuracy"])
        for _, r in t.iterrows():
            model = label_model_name(r["label"], r["level"])
            rows.append(dict(kind="labels_efficiency", key=model, model=model, metric="val_accuracy",
                             level=r["level"], value=r["val_accuracy"], file=path, label=r["label"]))
    if tables.get("labels_stats"):
        path = str(tables["labels_stats"])
        t = _read(path, ["label", "entropy", "L1", "L2"])
        for _, r in t.iterrows():
            for metric in ("entropy", "L1", "L2"):
                rows.append(dict(kind="labels_stats", key=r["label"], model=None, metric=metric, value=r[metric],
                                 file=path, label=r["label"]))
    for group, path in (tables.get("direction") or {}).items():
        path = str(path)
        attacks = context.get("direction", {}).get(group, {}).get("attacks", {})
        t = _read(path, ["model", "accuracy", "alpha_dx", "alpha_x"])
        for _, r in t.iterrows():
            seen = set()
            for metric in ("accuracy", "alpha_dx", "alpha_x"):
                rows.append(dict(kind="direction", key=r["model"], model=r["model"], metric=metric,
                                 value=r[metric], file=path))
            for attack, metric in attacks.items():  # the group's first attack of each SPEC 5 column
                if metric and metric not in seen and f"eps50_{attack}" in t.columns:
                    seen.add(metric)
                    rows.append(dict(kind="direction", key=r["model"], model=r["model"], metric=metric,
                                     value=r[f"eps50_{attack}"], file=path, attack=attack))
    long = pd.DataFrame(rows, columns=["kind", "key", "model", "metric", "eps", "level", "value", "n", "file",
                                       "label", "attack"])
    for col in ("eps", "level", "value", "n"):
        long[col] = pd.to_numeric(long[col], errors="coerce").astype(float)
    # a model in two direction groups: its first group's numbers
    return long.drop_duplicates(["kind", "key", "model", "metric", "eps", "level"], keep="first")


# ---- the join -------------------------------------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    return bool(np.isclose(a, b, rtol=0, atol=1e-9))


def _fmt(x: Any) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) and not pd.isna(x) else str(x)


def check_mapping(references: pd.DataFrame, mapping: Mapping[str, Mapping[str, str]]) -> None:
    """ReferenceError naming the config key of a mapped table or paper row that no reference CSV has."""
    tables = references.groupby("table", sort=False)["row"].apply(lambda s: list(dict.fromkeys(s))).to_dict()
    for table, rows in mapping.items():
        if table not in tables:
            raise ReferenceError(f"config key 'references.{table}': no reference table {table!r}; "
                                 f"expected one of {sorted(tables)}")
        for row in rows:
            if row not in tables[table]:
                raise ReferenceError(f"config key 'references.{table}.{row}': table {table!r} has no row {row!r}; "
                                     f"its rows: {tables[table]}")


def _match(ref: Mapping[str, Any], long: pd.DataFrame, kind: str, mapped: str) -> tuple[pd.DataFrame, str]:
    """The reproduced rows for one reference row and the mapped name, or (empty, reason)."""
    of_kind = long[long["kind"] == kind]
    if of_kind.empty:
        return of_kind, f"the run has no {kind} table (its study is not enabled)"
    key = mapped
    if ref["table"] in SERIES_TABLES or ref["table"] == "labels_stats":
        labels = long.loc[long["model"] == mapped, "label"].dropna()
        if labels.empty:
            return of_kind.iloc[:0], f"model {mapped!r} is not among the label study's models of this run"
        label = labels.iloc[0]
        if ref["table"] == "labels_stats":
            key = label
        else:
            from advpipe.labels.study import label_model_name
            key = label_model_name(label, ref["level"])
            if not (of_kind["key"] == key).any():
                levels = sorted(of_kind.loc[of_kind["label"] == label, "level"].dropna().unique())
                return of_kind.iloc[:0], (f"label {label!r} not reproduced at level {_fmt(ref['level'])} "
                                          f"(levels: {', '.join(_fmt(x) for x in levels) or 'none'})")
    rows = of_kind[of_kind["key"] == key]
    if rows.empty:
        return rows, f"{mapped!r} is not in the run's {kind} table"
    rows = rows[rows["metric"] == ref["metric"]]
    if rows.empty:
        return rows, f"metric {ref['metric']!r} is not in the run's {kind} table"
    if ref["eps"] is not None and not pd.isna(ref["eps"]):
        found = rows
        rows = rows[[_same(e, ref["eps"]) for e in rows["eps"]]]
        if rows.empty:
            grid = ", ".join(_fmt(x) for x in sorted(found["eps"].dropna().unique()))
            return rows, f"eps {_fmt(ref['eps'])} is not in the run's grid ({grid})"
    return rows, ""


def join(references: pd.DataFrame, tables: Mapping[str, Any], context: Mapping[str, Any]) -> pd.DataFrame:
    """Every reference row beside its reproduced number(s) (OUT_COLUMNS): one output row per reproduced match
    (vrapi: one per vrapi model), or one with an empty `reproduced` and the `reason`."""
    mapping = context.get("mapping") or {}
    check_mapping(references, mapping)
    long = reproduced_long(tables, context)
    scale = context.get("scale") or {}
    out = []
    for _, ref in references.iterrows():
        base = {"study": ref["study"], "table": ref["table"], "row": ref["row"], "metric": ref["metric"],
                "eps": ref["eps"], "level": ref["level"], "reference": ref["value"], "stated": ref["stated"],
                "source": ref["source"], "note": ref["note"], "paper_dataset": ref["dataset"],
                "paper_architecture": ref["architecture"], "paper_epochs": ref["epochs"], "paper_n": ref["n"]}
        kind = SOURCES.get(ref["table"], None)
        mapped = mapping.get(ref["table"], {}).get(ref["row"])
        reason = ""
        matches = long.iloc[:0]
        if kind is None:
            reason = NO_SOURCE_REASON.get(ref["table"], f"no reproduced table is joined for table {ref['table']!r}")
        elif mapped is None:
            reason = f"not mapped: config key 'references.{ref['table']}' maps no model to this paper row"
        else:
            matches, reason = _match(ref, long, kind, mapped)
        if pd.isna(ref["value"]):
            reason = "; ".join(r for r in ("no reference number (see note)", reason) if r)
        if matches.empty:
            out.append({**base, "mapped_to": mapped, "reason": reason})
            continue
        for _, m in matches.iterrows():
            model = m["model"] if isinstance(m["model"], str) else (
                mapped if kind != "labels_stats" else None)
            s = scale.get(model, {}) if model else {}
            out.append({**base, "reproduced": m["value"], "reproduced_model": model, "mapped_to": mapped,
                        "reproduced_file": m["file"], "reason": reason,
                        "run_dataset": s.get("dataset"), "run_dataset_source": s.get("dataset_source"),
                        "run_architecture": s.get("architecture"), "run_epochs": s.get("epochs"),
                        "run_n": m["n"]})
    return pd.DataFrame(out, columns=list(OUT_COLUMNS))


# ---- figure and stage -----------------------------------------------------------------------------------------------
def plot(joined: pd.DataFrame, stem: str | os.PathLike, dpi: int = 100) -> None:
    """One panel per study: each paired number as a point (reference x, reproduced y, colour: metric), y = x dashed."""
    import seaborn as sns

    from advpipe.plots.figures import new_figure, save_figure

    studies = [s for s in STUDIES if s in set(joined["study"])] or ["(none)"]
    fig = new_figure((3.6 * len(studies), 3.6))
    for k, study in enumerate(studies):
        ax = fig.add_subplot(1, len(studies), k + 1)
        rows = joined[joined["study"] == study]
        paired = rows.dropna(subset=["reference", "reproduced"])
        ax.set_title(f"{study}: {len(paired)} of {len(rows)} paired", fontsize="small")
        ax.set_xlabel("reference (paper)")
        if k == 0:
            ax.set_ylabel("reproduced")
        only = rows.dropna(subset=["reproduced"])
        if paired.empty and not only.empty:  # no paper numbers (vrapi): the reproduced ones of the first metric
            metric = only["metric"].iloc[0]
            only = only[only["metric"] == metric]
            names = [f"{r} ({m})" if only["reproduced_model"].nunique() > 1 else str(r)
                     for r, m in zip(only["row"], only["reproduced_model"])]
            ax.barh(names, only["reproduced"].astype(float), color="C0")
            ax.invert_yaxis()
            ax.set_xlabel(f"reproduced {metric} (no paper number)")
            ax.set_ylabel("")
            ax.tick_params(axis="y", labelsize="x-small")
            continue
        if paired.empty:
            ax.text(0.5, 0.5, "no reference number\npaired with a reproduced one", ha="center", va="center",
                    transform=ax.transAxes, fontsize="small")
            continue
        data = paired.assign(reference=paired["reference"].astype(float), reproduced=paired["reproduced"].astype(float))
        sns.scatterplot(data=data, x="reference", y="reproduced", hue="metric", style="metric", ax=ax, s=25)
        both = np.concatenate([data["reference"].to_numpy(), data["reproduced"].to_numpy()])
        lo, hi = float(both.min()), float(both.max())
        if lo > 0 and hi / lo > 20:
            ax.set_xscale("log")
            ax.set_yscale("log")
        lo, hi = (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)
        ax.plot([lo, hi], [lo, hi], ls="--", color="grey", lw=0.8)
        ax.legend(frameon=False, fontsize="xx-small")
    fig.tight_layout()
    save_figure(fig, Path(stem), dpi=dpi, transparent=False)


def run(*, references: Sequence[str | os.PathLike], tables: Mapping[str, Any], context: Mapping[str, Any],
        out_csv: str | os.PathLike, figure_stem: str | os.PathLike, out_html: str | os.PathLike | None = None,
        dpi: int = 100, log=print) -> pd.DataFrame:
    """Rule references: load the reference CSVs, join them with the run's study tables, write the table (and its
    HTML view for the report) and figure."""
    from advpipe.io.tables import write_csv, write_html

    joined = join(load_references(references), tables, context)
    write_csv(joined, out_csv)
    if out_html:
        write_html(joined, out_html, "SPEC.md's reference numbers beside the reproduced ones",
                   "paper scale: dataset, architecture, epochs, n; this run's: the run_* columns; reason: why a "
                   "paper row has no reproduced number")
    plot(joined, figure_stem, dpi=dpi)
    paired = joined.dropna(subset=["reference", "reproduced"])
    log(f"{len(joined)} reference rows, {len(paired)} paired with a reproduced number")
    if not paired.empty:
        log(paired[["table", "row", "metric", "eps", "level", "reference", "reproduced", "reproduced_model"]]
            .to_string(index=False))
    return joined
