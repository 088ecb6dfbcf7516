"""Trained-model folders: model.pt (state_dict only) + model.json (how to rebuild it)."""
from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from advpipe.io.atomic import atomic_path
from advpipe.models.base import Classifier
from advpipe.models.registry import build_model


class CheckpointError(RuntimeError):
    """A model folder is missing a file, or a file is truncated, corrupt or unsafe; names the file."""


def save_trained(model_dir: str | os.PathLike, model: Classifier, spec: Mapping[str, Any]) -> None:
    """Write model.pt (state_dict) and model.json (`spec`: arch, arch_args, input shape, classes, ...)."""
    model_dir = Path(model_dir)
    # Saved through a buffer: torch names the archive's root folder after the file, and the temporary
    # name would otherwise make two identical models differ byte for byte.
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    with atomic_path(model_dir / "model.pt") as tmp:
        tmp.write_bytes(buffer.getvalue())
    with atomic_path(model_dir / "model.json") as tmp:
        tmp.write_text(json.dumps(dict(spec), indent=2, sort_keys=True) + "\n")


def read_spec(model_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(model_dir) / "model.json"
    if not path.exists():
        raise CheckpointError(f"{path}: file does not exist (is {model_dir} a trained-model folder?)")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON: {err}") from err
    for key in ("arch", "in_channels", "num_classes", "image_size", "classes"):
        if key not in spec:
            raise CheckpointError(f"{path}: missing key {key!r}")
    return spec


def build_from_spec(spec: Mapping[str, Any]) -> Classifier:
    """An untrained network as model.json describes it."""
    return build_model(spec["arch"], in_channels=spec["in_channels"], num_classes=spec["num_classes"],
                       image_size=spec["image_size"], mean=spec.get("mean"), std=spec.get("std"),
                       **spec.get("arch_args", {}))


def load_trained(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild the model described by model_dir/model.json and load model.pt, in eval mode.

    The state_dict is read with weights_only=True: a checkpoint never executes pickled code.
    """
    spec = read_spec(model_dir)
    model = build_from_spec(spec)
    path = Path(model_dir) / "model.pt"
    if not path.exists():
        raise CheckpointError(f"{path}: file does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused to load (not plain tensors; would run pickled code?): {err}") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint: {err}") from err
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: does not match architecture {spec['arch']!r}: {err}") from err
    return model.to(device).eval()
