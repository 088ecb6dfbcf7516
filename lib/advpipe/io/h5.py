"""HDF5 dumps: named per-sample arrays aligned on `index`, plus provenance attrs (DESIGN.md, Dump)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np

from advpipe import __version__
from advpipe.io.atomic import atomic_path
from advpipe.errors import InputError


class DumpError(InputError, RuntimeError):
    """A dump is missing or unreadable, lacks a dataset or holds one of the wrong shape, kind or range; the message
    names the file (and the dataset)."""


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance(section: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Attrs every dump carries: the config section (JSON), its hash, package version, git commit, seed.

    No time stamp on purpose: the same config and seed give byte-identical attrs.
    """
    text = json.dumps(section, sort_keys=True, default=str)
    return {
        "config": text,
        "config_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "advpipe_version": __version__,
        "git_commit": _git_commit(),
        "seed": int(seed),
    }


def write_dump(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> None:
    """Write `arrays` (each with the same first dimension) and `attrs` atomically to an HDF5 file."""
    lengths = {k: np.asarray(v).shape[0] for k, v in arrays.items() if np.asarray(v).ndim > 0}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{path}: arrays are not aligned on their first dimension: {lengths}")
    with atomic_path(path) as tmp:
        # track_times=False keeps files byte-identical across runs of the same config.
        with h5py.File(tmp, "w", track_order=True) as f:
            for key, value in arrays.items():
                value = np.asarray(value)
                big = value.ndim > 1 and value.size > 4096
                f.create_dataset(key, data=value, track_times=False,
                                 chunks=True if big else None,
                                 compression="gzip" if big else None, compression_opts=4 if big else None,
                                 shuffle=big)
            for key, value in attrs.items():
                f.attrs[key] = value


def _open(path: str | os.PathLike) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise DumpError(f"{path}: file does not exist; expected an HDF5 dump (made by the rule that outputs it)")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DumpError(f"{path}: not a readable HDF5 file (truncated or corrupt? {err}); expected a complete "
                        "HDF5 dump (delete it and rerun the rule that makes it)") from err


@dataclass(frozen=True)
class Layout:
    """What a dataset of a dump holds: its shape, one entry per axis (an int: that size; a letter: a size shared by
    every dataset read together, given or learnt from the first one read: N samples, C classes, D features, K eps
    values, P projection axes; None: any size), the kind of its values ("int", "bool" or "num") and whether they
    are class indices (0..C-1)."""

    shape: tuple[int | str | None, ...]
    kind: str = "num"
    classes: bool = False


# Every dataset name advpipe's readers read, as advpipe's stages write it (DESIGN.md, Dump). Readers check what
# they read against this table (read_dump), so a damaged or foreign dump is refused where it is read, naming the
# file and the dataset, never deep inside a projection, a score or a figure.
LAYOUTS: dict[str, Layout] = {
    "index": Layout(("N",), "int"),
    "label": Layout(("N",), "int", classes=True),
    "pred": Layout(("N",), "int", classes=True),
    "correct": Layout(("N",), "bool"),
    "clean_correct": Layout(("N",), "bool"),
    "success": Layout(("N",), "bool"),
    "features": Layout(("N", "D")),
    "logits": Layout(("N", "C")),
    "proba": Layout(("N", "C")),
    "success_eps": Layout(("N", "K"), "bool"),
    "pred_eps": Layout(("N", "K"), "int", classes=True),
    "distance": Layout(("N",)),
    "x_adv": Layout(("N", None, None, None)),
    "clean": Layout(("N", "P")),  # projections: 2-D points (P = 2) of the clean and the adversarial rows
    "adv": Layout(("N", "P")),
    # estimators of dx (SPEC 5; pipeline/estimate.py), flattened per sample (attr sample_shape): the direct
    # method's one direction per image, the indirect method's one per (image, class) with its reconstruction
    "dx": Layout(("N", "F")),
    "dx_all": Layout(("N", "C", "F")),
    "x_hat": Layout(("N", "C", "F")),
    "mse": Layout(("N", "C")),
    # LESCI's activation exports (pipeline/lesci.py): M = the layer's size
    **{f"{part}_{key}": layout for part in ("train", "val") for key, layout in (
        ("activation", Layout(("N", "M"))), ("label", Layout(("N",), "int")), ("pred", Layout(("N",), "int")),
        ("index", Layout(("N",), "int")))},
}

_DIM_NAMES = {"N": "samples", "C": "classes", "D": "features", "K": "eps values", "P": "projection axes",
              "F": "input values per sample"}
_KIND_WORDS = {"int": "integers", "bool": "booleans (or 0/1)", "num": "numbers"}


def _shape_text(layout: Layout, dims: Mapping[str, int]) -> str:
    axes = [str(dims.get(a, a)) if isinstance(a, str) else ("*" if a is None else str(a)) for a in layout.shape]
    return f"({axes[0]},)" if len(axes) == 1 else f"({', '.join(axes)})"


def _dims_text(layout: Layout, dims: Mapping[str, int]) -> str:
    letters = [a for a in layout.shape if isinstance(a, str) and a not in dims]
    return f" ({', '.join(f'{a} {_DIM_NAMES[a]}' for a in letters)})" if letters else ""


def _class_count(f: h5py.File, dims: dict[str, int], sources: dict[str, str]) -> None:
    """C from the width of the dump's logits or proba (their shape only, nothing read) unless given."""
    if "C" in dims:
        return
    for key in ("logits", "proba"):
        if key in f and len(f[key].shape) == 2:
            dims["C"] = int(f[key].shape[1])
            sources["C"] = f"the width of dataset {key!r}"
            return


def _check_layout(path, arrays: Mapping[str, np.ndarray], dims: dict[str, int], sources: dict[str, str]) -> None:
    """DumpError unless each array with a known name has its layout (LAYOUTS), naming the file and the dataset."""
    known = {k: LAYOUTS[k] for k in arrays if k in LAYOUTS}
    for key, layout in known.items():  # the number of axes first: a 1-D features is not "misaligned"
        value = arrays[key]
        if value.ndim != len(layout.shape):
            raise DumpError(f"{path}: dataset {key!r} has shape {value.shape}; expected shape "
                            f"{_shape_text(layout, dims)}{_dims_text(layout, dims)}")
    lengths = {k: v.shape[0] for k, v in arrays.items() if np.ndim(v) > 0}
    if len(set(lengths.values())) > 1:
        raise DumpError(f"{path}: datasets differ in length {lengths}; expected one row per sample in each")
    for key, layout in known.items():
        value = arrays[key]
        for axis, size in zip(layout.shape, value.shape):
            if isinstance(axis, str):
                if axis not in dims:
                    dims[axis], sources[axis] = int(size), f"dataset {key!r}"
                    continue
                want = dims[axis]
            else:
                want = axis
            if want is not None and size != want:
                given = (f" ({_DIM_NAMES[axis]}: {want}, from {sources[axis]})"
                         if isinstance(axis, str) and axis in sources else "")
                raise DumpError(f"{path}: dataset {key!r} has shape {value.shape}; expected shape "
                                f"{_shape_text(layout, dims)}{given}")
        kind = value.dtype.kind
        ok = {"int": kind in "iu", "bool": kind == "b" or (kind in "iu" and np.isin(value, (0, 1)).all()),
              "num": kind in "biuf"}[layout.kind]
        if not ok:
            raise DumpError(f"{path}: dataset {key!r} holds {value.dtype} values; expected {_KIND_WORDS[layout.kind]}")
        if layout.classes and value.size:
            lo, hi = int(value.min()), int(value.max())
            top = dims.get("C")
            if lo < 0 or (top is not None and hi >= top):
                accepted = (f"class indices 0..{top - 1} ({top} classes: {sources.get('C', 'given')})"
                            if top is not None else "class indices >= 0")
                raise DumpError(f"{path}: dataset {key!r} holds values in [{lo}, {hi}]; expected {accepted}")


def read_dump(path: str | os.PathLike, keys: Iterable[str] | None = None, *, num_classes: int | None = None,
              dims: Mapping[str, int | tuple[int, str]] | None = None,
              classes_from: str = "") -> dict[str, np.ndarray]:
    """Read the named datasets (all when `keys` is None) of an HDF5 dump into numpy arrays.

    Every dataset read must have one row per sample (the same first dimension), as write_dump wrote it, and each
    one named in LAYOUTS its shape, kind and range there: class indices in 0..C-1, with C = `num_classes` (say
    where it comes from in `classes_from`, e.g. "model.json") or else the width of the dump's logits. `dims` fixes
    other sizes, each an int or (int, where it comes from), e.g. {"P": (2, "2-D figures")}. A dump that breaks
    any of it is a DumpError naming the file, the dataset and the expected shape or range.
    """
    known, sources = {}, {}
    for k, v in (dims or {}).items():  # a size, or (size, where it comes from)
        known[k], sources[k] = (int(v[0]), str(v[1])) if isinstance(v, tuple) else (int(v), "the reading stage")
    if num_classes is not None:
        known["C"], sources["C"] = int(num_classes), classes_from or "the model"
    with _open(path) as f:
        names = list(f.keys()) if keys is None else list(keys)
        missing = [k for k in names if k not in f]
        if missing:
            raise DumpError(f"{path}: missing dataset(s) {missing}; expected {names} (has {sorted(f.keys())})")
        try:
            arrays = {k: np.asarray(f[k][()]) for k in names}
        except (OSError, RuntimeError, ValueError, TypeError, AttributeError) as err:
            raise DumpError(f"{path}: cannot read data (truncated or corrupt? {err}); expected a complete "
                            "HDF5 dump (delete it and rerun the rule that makes it)") from err
        _class_count(f, known, sources)
    _check_layout(path, arrays, known, sources)
    return arrays


def require_finite(path: str | os.PathLike, key: str, values: np.ndarray) -> np.ndarray:
    """`values` (dataset `key` of dump `path`), or DumpError when any is NaN or Inf."""
    bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise DumpError(f"{path}: dataset {key!r} holds {bad} NaN or Inf value(s); expected finite numbers")
    return values


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """Read the provenance attrs of an HDF5 dump."""
    with _open(path) as f:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
