"""Stage robustness: robustness curve (robust accuracy vs eps) and eps50 (SPEC 5) of one attack dump, read from the
dump only (never attacking again).

A fixed-budget dump (no `distance`) gives one row per eps of its grid (curve_from_success). A minimal-perturbation
dump (`distance`: the smallest adversarial distance found, inf where none within the budget) gives the exact step
curve on [0, budget] (step_curve_from_distances): every eps up to the budget, not only a grid.
"""
from __future__ import annotations

import json
import os
from typing import Any

import h5py
import numpy as np
import pandas as pd

from advpipe.io.h5 import DumpError, read_attrs, read_dump
from advpipe.io.tables import write_csv
from advpipe.metrics.robustness import curve_from_success, eps50_from_curve, step_curve_from_distances

# Every attack dump holds these (advpipe.pipeline.attack.run); `distance` only for minimal attacks.
REQUIRED = ("clean_correct", "success_eps")
EPS50_COLUMNS = ("eps50", "threshold", "clean_accuracy", "robust_accuracy_eps_max", "eps_max", "n", "curve",
                 "space")


def _dataset_names(path: str | os.PathLike) -> set[str]:
    read_attrs(path)  # a missing or unreadable file is a DumpError naming it
    with h5py.File(path, "r") as f:
        return set(f.keys())


def minimal_budget(eps: np.ndarray, distance: np.ndarray, clean_correct: np.ndarray) -> float:
    """The budget of a minimal attack's step curve: the largest finite eps attr (the search budget); when there is
    none (C&W without a budget: eps = [inf]), the largest finite distance of a clean-correct image, beyond which
    the curve is flat anyway (every other image has inf: no adversarial found); 0 when there is none either."""
    finite = eps[np.isfinite(eps)]
    if len(finite):
        return float(finite.max())
    d = distance[clean_correct & np.isfinite(distance)]
    return float(d.max()) if len(d) else 0.0


def load_curve(path: str | os.PathLike) -> tuple[pd.DataFrame, float, dict[str, Any]]:
    """(curve, clean accuracy, info) of an attack dump: curve columns eps, robust_accuracy, n sorted by eps; clean
    accuracy = the fraction of the N attacked images that are clean-correct; info: kind ("grid" or "step"),
    eps_max, space, norm (None when the dump's config attr does not say). DumpError names the file and what is
    wrong (missing dataset or attr, shapes that disagree, bad values)."""
    names = _dataset_names(path)
    minimal = "distance" in names
    arrays = read_dump(path, [*REQUIRED, "distance"] if minimal else list(REQUIRED))
    attrs = read_attrs(path)
    if "eps" not in attrs:
        raise DumpError(f"{path}: missing attr 'eps'; expected the attack's eps grid (or search budget) as attrs "
                        f"(has {sorted(attrs)})")
    eps = np.atleast_1d(np.asarray(attrs["eps"], dtype=np.float64))
    success = arrays["success_eps"]
    clean_correct = arrays["clean_correct"].astype(bool)
    if success.ndim != 2 or success.shape[1] != len(eps):
        raise DumpError(f"{path}: dataset 'success_eps' has shape {success.shape}; expected (N, K) with K = "
                        f"{len(eps)}, the length of attr 'eps'")
    try:
        if minimal:
            distance = arrays["distance"].astype(np.float64)
            budget = minimal_budget(eps, distance, clean_correct)
            curve = step_curve_from_distances(distance, budget, clean_correct)
        else:
            if len(np.unique(eps)) != len(eps):
                raise ValueError(f"attr 'eps' repeats values {eps.tolist()}; eps50 needs each eps once")
            curve = curve_from_success(eps, success.T, clean_correct)
            curve = curve.sort_values("eps", kind="stable").reset_index(drop=True)
            budget = float(curve["eps"].iloc[-1])
    except ValueError as err:  # the metric's own check of the values (nan, negative, empty, ...)
        raise DumpError(f"{path}: {err}") from err
    try:
        norm = json.loads(attrs.get("config", "{}")).get("attack", {}).get("norm")
    except (ValueError, AttributeError):
        norm = None
    info = {"kind": "step" if minimal else "grid", "eps_max": budget, "space": str(attrs.get("space", "")),
            "norm": norm if isinstance(norm, str) else None}
    return curve, float(clean_correct.mean()), info


def curve_eps50(curve: pd.DataFrame, clean_accuracy: float) -> tuple[float, float, pd.DataFrame]:
    """(eps50, threshold, the curve eps50 was read from) per SPEC 5: the clean point (0, clean accuracy) is put in
    front when the curve has no row at eps = 0, as the original evaluates clean data first; threshold =
    min(0.5, error(eps_max) - 0.01)."""
    full = curve
    if curve["eps"].iloc[0] != 0:
        clean = pd.DataFrame({"eps": [0.0], "robust_accuracy": [clean_accuracy], "n": [curve["n"].iloc[0]]})
        full = pd.concat([clean, curve], ignore_index=True)
    value = eps50_from_curve(full)
    threshold = min(0.5, 1.0 - float(full["robust_accuracy"].iloc[-1]) - 0.01)
    return value, threshold, full


def run(*, attack_h5: str | os.PathLike, out_csv: str | os.PathLike, out_eps50: str | os.PathLike,
        figure_stem: str | os.PathLike, dpi: int = 100, title: str = "", log=print) -> pd.DataFrame:
    """Write the robustness curve of one attack dump (out_csv: eps, robust_accuracy, n), its eps50 (out_eps50:
    one row, EPS50_COLUMNS) and the figure figure_stem.pdf / .png; returns the eps50 row."""
    from advpipe.plots.curves import plot_robustness_curves  # matplotlib only when a figure is drawn

    curve, clean_accuracy, info = load_curve(attack_h5)
    value, threshold, full = curve_eps50(curve, clean_accuracy)
    row = pd.DataFrame([{"eps50": value, "threshold": threshold, "clean_accuracy": clean_accuracy,
                         "robust_accuracy_eps_max": float(curve["robust_accuracy"].iloc[-1]),
                         "eps_max": info["eps_max"], "n": int(curve["n"].iloc[0]), "curve": info["kind"],
                         "space": info["space"]}], columns=list(EPS50_COLUMNS))
    write_csv(curve, out_csv)
    write_csv(row, out_eps50)
    what = f"{info['norm']} eps" if info["norm"] else "eps"
    xlabel = f"{what} ({info['space']} space)" if info["space"] else what
    plot_robustness_curves(full, figure_stem, eps50=value, title=title, xlabel=xlabel,
                           steps=info["kind"] == "step", dpi=dpi)
    log(f"{attack_h5}: {info['kind']} curve of {len(curve)} points up to eps {info['eps_max']:g}, clean accuracy "
        f"{clean_accuracy:.4f}, robust accuracy there {row['robust_accuracy_eps_max'].iloc[0]:.4f}, "
        f"eps50 {value:.6g} (threshold {threshold:.4g})")
    return row
