"""Resumable training: the loop's whole state in one file, saved atomically after every epoch.

`train_classifier(..., state_path=p, fingerprint=f)` writes p after each epoch and, when p holds a state saved
for the same run, continues after that state's epoch, with final weights and log rows bit-identical (CPU) to
an uninterrupted run. The file is a cache that lives outside the rule's outputs: the caller picks its path,
builds `f` with `fingerprint(...)` from what defines the run, and calls `clear_state(p)` once its outputs
are written.

What one state holds (torch.save of plain dicts, lists, numbers, strings and tensors only, so it loads with
torch.load(weights_only=True) and never runs pickled code): format version, fingerprint, last finished
epoch, model / optimizer / scheduler state_dicts, the loop's generator (shuffling, augmentation), torch's
global CPU RNG (and the model device's CUDA RNG), numpy's and python's global RNGs, the objective's state
(`training_state()`, else `state_dict()`), the `on_epoch_end` callback's `state_dict()`, and the log rows.

Unreadable state: the writes are atomic (temporary file beside the target, fsync, os.replace, fsync of the
folder), so a kill or crash leaves either the previous state or the new one, never a partial file. A state
file that still fails to load (truncated by a broken disk, a foreign file, an older format) is a lost cache,
not an error in the results: it is reported in the log and training starts over from epoch 1, which gives
exactly the uninterrupted result. The same holds for a state saved for another run (other fingerprint).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from advpipe.io.atomic import atomic_path

FORMAT = 1  # layout of the state dict; a file of another format is ignored (training starts over)


def fingerprint(*parts: Any) -> str:
    """A stable hex digest of JSON-able `parts` (dict keys sorted; other objects by str()), e.g. the resolved
    model spec, training recipe, dataset entry and seeds. Same parts, same digest, in every process."""
    text = json.dumps(parts, sort_keys=True, default=_jsonable, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 over shape, dtype and bytes of `tensors` (the training data: ~1 s per GB)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        if t.numel():
            h.update(t.contiguous().cpu().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_state(path: str | os.PathLike, state: Mapping[str, Any], verify: bool = False) -> None:
    """torch.save `state` to `path` atomically: a temporary file in the same folder, fsync, os.replace, then
    fsync of the folder, so `path` always holds a complete state (the previous one until the rename).

    `verify`: first check that the bytes load with weights_only=True (TypeError otherwise), so a state holding
    an object torch will not load safely fails loudly at the first save instead of never resuming."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    if verify:
        try:
            torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu", weights_only=True)
        except Exception as err:
            raise TypeError(f"resume state for {path} does not load with weights_only=True ({err}); objective and "
                            "callback states must hold only dicts, lists, numbers, strings and tensors") from err
    with atomic_path(path) as tmp:  # removes the temporary file if anything below fails
        with open(tmp, "wb") as f:
            _write_all(f, buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
    _fsync_dir(path.parent)


def _write_all(f, data) -> None:
    f.write(data)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """The state dict in `path`, loaded with weights_only=True onto the CPU; raises on any unreadable file."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"holds a {type(state).__name__}, not a training-state dict")
    return state


def load_state(path: str | os.PathLike, key: str, log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """The state saved at `path` for run `key` (a fingerprint), or None to start over: no file, an unreadable
    one, another format or another run's (the last three are logged)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = read_state(path)
    except Exception as err:  # any unreadable cache means: start over (see the module doc)
        log(f"resume state {path} is unreadable ({type(err).__name__}: {err}); starting over from epoch 1")
        return None
    if state.get("format") != FORMAT:
        log(f"resume state {path} has format {state.get('format')!r}, expected {FORMAT}; starting over")
        return None
    if state.get("fingerprint") != key:
        log(f"resume state {path} was saved for another run (fingerprint {str(state.get('fingerprint'))[:12]}, "
            f"this run {key[:12]}); starting over from epoch 1")
        return None
    return state


def clear_state(path: str | os.PathLike) -> None:
    """Delete the state at `path` and any temporary file a killed save left beside it. Call it after the
    outputs the training feeds are written (a kill before that resumes from the last epoch, training nothing)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # atomic_path's temporary names
            stale.unlink(missing_ok=True)


# --- global random streams -------------------------------------------------------------------------------

def global_rng_state(device: torch.device) -> dict[str, Any]:
    """torch's CPU RNG, the CUDA RNG of `device` (if cuda), numpy's and python's global RNGs."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": version, "internal": list(internal), "gauss": gauss}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_global_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


# --- objectives and callbacks ------------------------------------------------------------------------------

def objective_state(obj: Any) -> Any:
    """An objective's full mutable state: `training_state()` (integrators, generators, accumulators), else
    `state_dict()`, else None (a stateless function such as cross_entropy)."""
    for name in ("training_state", "state_dict"):
        method = getattr(obj, name, None)
        if callable(method):
            return method()
    return None


def load_objective_state(obj: Any, state: Any) -> None:
    """Inverse of objective_state."""
    if state is None:
        return
    for getter, setter in (("training_state", "load_training_state"), ("state_dict", "load_state_dict")):
        if callable(getattr(obj, getter, None)):
            getattr(obj, setter)(state)
            return
    raise TypeError(f"{type(obj).__name__} has no training_state/state_dict to restore a saved state into")


def callback_state(callback: Any) -> Any:
    """The `on_epoch_end` callback's `state_dict()`, or None when it has none (a stateless function)."""
    method = getattr(callback, "state_dict", None)
    return method() if callable(method) else None


def load_callback_state(callback: Any, state: Any) -> None:
    if state is not None:
        callback.load_state_dict(state)


def clone_state(obj: Any) -> Any:
    """A deep copy of nested dicts/lists/tuples with every tensor cloned (a snapshot the live objects cannot
    change)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, Mapping):
        copy = {k: clone_state(v) for k, v in obj.items()}
        return copy if type(obj) is dict else type(obj)(copy)  # e.g. MultiStepLR's Counter of milestones
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_state(v) for v in obj)
    return obj
