"""HDF5 dumps: named per-sample arrays aligned on `index`, plus provenance attrs (DESIGN.md, Dump)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np

from advpipe import __version__
from advpipe.io.atomic import atomic_path


class DumpError(RuntimeError):
    """A dump is missing, unreadable or lacks a dataset; the message names the file."""


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


def read_dump(path: str | os.PathLike, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Read the named datasets (all when `keys` is None) of an HDF5 dump into numpy arrays.

    Every dataset read must have one row per sample (the same first dimension), as write_dump wrote it.
    """
    with _open(path) as f:
        names = list(f.keys()) if keys is None else list(keys)
        missing = [k for k in names if k not in f]
        if missing:
            raise DumpError(f"{path}: missing dataset(s) {missing}; expected {names} (has {sorted(f.keys())})")
        try:
            arrays = {k: f[k][()] for k in names}
        except (OSError, RuntimeError, ValueError, TypeError, AttributeError) as err:
            raise DumpError(f"{path}: cannot read data (truncated or corrupt? {err}); expected a complete "
                            "HDF5 dump (delete it and rerun the rule that makes it)") from err
    lengths = {k: v.shape[0] for k, v in arrays.items() if np.ndim(v) > 0}
    if len(set(lengths.values())) > 1:
        raise DumpError(f"{path}: datasets differ in length {lengths}; expected one row per sample in each")
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
