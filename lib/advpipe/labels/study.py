"""How the label-representations study names its labels and levels in config keys and file paths (no torch:
the Snakefile imports this)."""
from __future__ import annotations

from typing import Any, Mapping


def label_kinds(study: Mapping[str, Any]) -> dict[str, str]:
    """Label name (used in file paths) -> kind string for make_labels: each of `kinds` is its own name,
    each `label_files` entry is `file=<path>` under its key (bert, glove, ...)."""
    kinds = {kind: kind for kind in study["kinds"]}
    kinds.update({name: f"file={path}" for name, path in study["label_files"].items()})
    return kinds


def format_level(level: float) -> str:
    """A level as it appears in paths: 100, 20, 2.5."""
    return f"{float(level):g}"
