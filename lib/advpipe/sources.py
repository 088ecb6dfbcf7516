"""Facts about dataset sources that the config layer needs without loading any data (torch-free: the Snakefile
imports this): the natural value range a source declares, and whether it carries a ground-truth dx (SPEC 5)."""
from __future__ import annotations

from typing import Any, Mapping

# SPEC 5's synthetic data live in [-1, 1] and know the exact direction to the closest point of the other class.
SYNTHETIC = ("spheres", "squares", "square32")
NATURAL_RANGES: dict[str, tuple[float, float]] = {s: (-1.0, 1.0) for s in SYNTHETIC}


def declared_range(dataset: Mapping[str, Any]) -> tuple[float, float]:
    """(lo, hi): natural = lo + (hi - lo) * pixels. The dataset's `range` key, else its source's, else [0, 1]."""
    if "range" in dataset:
        lo, hi = dataset["range"]
        return float(lo), float(hi)
    return NATURAL_RANGES.get(dataset["source"], (0.0, 1.0))


def has_ground_truth_dx(dataset: Mapping[str, Any]) -> bool:
    """Whether the dataset's splits carry extras["dx"], the exact direction to the closest other class."""
    return dataset["source"] in SYNTHETIC


def resolve_space(attack: Mapping[str, Any], dataset: Mapping[str, Any]) -> dict[str, Any]:
    """The attack entry with `space: data` replaced by the dataset's declared range ([lo, hi]; pixels for [0, 1]),
    so every stage (and Snakemake's params) sees the bounds the attack really runs in."""
    out = dict(attack)
    if out.get("space") == "data":
        lo, hi = declared_range(dataset)
        out["space"] = "pixels" if (lo, hi) == (0.0, 1.0) else [lo, hi]
    return out
