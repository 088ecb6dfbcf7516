"""Label representations (SPEC 3): label types by name, their statistics and figures.

`make_labels("speech", 10, seed, class_names)` or `make_labels("normal_dim=10", 10, seed)` gives the
(C, *label_shape) targets; a config's `label` string goes through `parse_label_kind`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from advpipe.labels import generators as g
from advpipe.labels import speech as sp
from advpipe.labels.generators import LabelError, load_label_file
from advpipe.labels.stats import label_entropy, label_stats_table, pairwise_distances, shannon_entropy
from advpipe.runtime import derive_seed


@dataclass(frozen=True)
class LabelKind:
    build: Callable[..., np.ndarray]   # (num_classes, rng, class_names, **params)
    value: tuple[str, Callable[[str], Any], str] | None = None  # (param, parser, meaning) of "kind=VALUE"
    doc: str = ""


def _shuffle(num_classes, rng, class_names, permutation_seed: int | None = 8, voice=None, audio_dir=None,
             side: int = g.SIDE):
    # SPEC: the original permuted with numpy seed 8. By default that seed is used, through a local legacy
    # RandomState (the original's generator family, never the global RNG); its exact draw sequence is not
    # recorded, so the permutations need not match the committed file. permutation_seed=None derives them
    # from the run seed instead.
    base = sp.speech_labels(class_names, num_classes, voice=voice, audio_dir=audio_dir, side=side)
    perm_rng = rng if permutation_seed is None else np.random.RandomState(int(permutation_seed))
    return sp.permute_columns(base, perm_rng)


def _file(num_classes, rng, class_names, path=None):
    if path is None:
        raise LabelError("file labels need a path: 'file=labels.npy' or path=... (a (classes, ...) .npy)")
    return load_label_file(path, num_classes)


LABEL_KINDS: dict[str, LabelKind] = {
    "category": LabelKind(lambda c, rng, names: g.category_labels(c), doc="one-hot rows, (C, C)"),
    "uniform": LabelKind(lambda c, rng, names, **p: g.uniform_labels(c, **p), doc="constant i*80/(C-1)"),
    "random": LabelKind(lambda c, rng, names, **p: g.random_labels(c, rng, **p), doc="iid U[0,80] 64x64"),
    "composite": LabelKind(lambda c, rng, names, **p: g.composite_labels(c, rng, **p),
                           doc="10 oriented Gaussian blobs, [0,80]"),
    "lowdim": LabelKind(lambda c, rng, names, **p: g.lowdim_labels(c, rng, **p), doc="U[0,80]^10"),
    "normal_dim": LabelKind(lambda c, rng, names, **p: g.normal_dim_labels(c, rng, **p),
                            ("dim", int, "a dimension, e.g. normal_dim=10"), "N(i, 0.1^2)^D, float64"),
    "uniform_gap": LabelKind(lambda c, rng, names, **p: g.uniform_gap_labels(c, rng, **p),
                             ("gap", float, "a gap, e.g. uniform_gap=1"), "U[i*g, 9+i*g]^50"),
    "speech": LabelKind(lambda c, rng, names, **p: sp.speech_labels(names, c, **p),
                        doc="class name by espeak-ng, mel dB 64x64"),
    "shuffle": LabelKind(_shuffle, doc="speech with time columns permuted per class"),
    "file": LabelKind(_file, ("path", str, "a .npy path, e.g. file=labels/bert.npy"), "user's (C, ...) .npy"),
}


def parse_label_kind(kind: str) -> tuple[str, dict[str, Any]]:
    """'normal_dim=10' -> ('normal_dim', {'dim': 10}); 'uniform_gap=0.1' -> ('uniform_gap', {'gap': 0.1});
    'file=x.npy' -> ('file', {'path': 'x.npy'}); plain names -> (name, {})."""
    if not isinstance(kind, str) or not kind.strip():
        raise LabelError(f"label kind must be a non-empty string, got {kind!r} (known: {sorted(LABEL_KINDS)})")
    name, eq, raw = kind.strip().partition("=")
    name = name.strip()
    if name not in LABEL_KINDS:
        raise LabelError(f"unknown label kind {name!r} in {kind!r}; known: {sorted(LABEL_KINDS)}")
    spec = LABEL_KINDS[name].value
    if not eq:
        return name, {}
    if spec is None:
        raise LabelError(f"label kind {name!r} takes no '=value' (got {kind!r})")
    param, parse, meaning = spec
    try:
        value = parse(raw.strip())
    except ValueError:
        raise LabelError(f"label kind {kind!r}: expected {meaning}, got {raw!r}") from None
    if isinstance(value, str) and not value:
        raise LabelError(f"label kind {kind!r}: expected {meaning}")
    return name, {param: value}


def make_labels(kind: str, num_classes: int, seed: int, class_names: Sequence[str] | None = None,
                **params: Any) -> np.ndarray:
    """(num_classes, *label_shape) targets of `kind`; the same (kind, classes, seed, params) give the same
    array. Random kinds draw from a Generator seeded by (seed, kind, params), never the global RNG."""
    name, parsed = parse_label_kind(kind)
    clash = set(parsed) & set(params)
    if clash:
        raise LabelError(f"label kind {kind!r}: {sorted(clash)} given both in the kind string and as a parameter")
    params = {**parsed, **params}
    if int(num_classes) < 1:
        raise LabelError(f"num_classes must be >= 1, got {num_classes}")
    spec = LABEL_KINDS[name]
    if spec.value is not None and spec.value[0] not in params:
        raise LabelError(f"label kind {name!r} needs {spec.value[2]}")
    rng = np.random.default_rng(derive_seed(seed, "labels", name, *(f"{k}={params[k]}" for k in sorted(params))))
    try:
        return spec.build(int(num_classes), rng, class_names, **params)
    except TypeError as exc:  # an unknown keyword: say which kind rejected it
        if "keyword argument" not in str(exc):
            raise
        raise LabelError(f"label kind {name!r}: bad parameters {sorted(params)} ({exc})") from exc


def __getattr__(name: str) -> Any:
    # The figure pulls in matplotlib; load it only when asked.
    if name == "plot_label_images":
        from advpipe.labels.figures import plot_label_images
        return plot_label_images
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LABEL_KINDS", "LabelError", "LabelKind", "label_entropy", "label_stats_table", "load_label_file",
           "make_labels", "pairwise_distances", "parse_label_kind", "plot_label_images", "shannon_entropy"]
