"""Trained-model folders: model.pt (state_dict only) + model.json (how to rebuild it)."""
from __future__ import annotations

import io
import json
import os
import pickle
import re
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


SPEC_KEYS = ("arch", "in_channels", "num_classes", "image_size", "classes")


def read_spec(model_dir: str | os.PathLike) -> dict[str, Any]:
    """model.json of a trained-model folder, checked to hold what build_from_spec needs."""
    path = Path(model_dir) / "model.json"
    expected = f"expected the JSON object save_trained writes, with keys {list(SPEC_KEYS)}"
    if not path.is_file():
        raise CheckpointError(f"{path}: file does not exist; expected a trained-model folder with model.json "
                              "and model.pt (is the model trained?)")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}); {expected}") from err
    if not isinstance(spec, dict):
        raise CheckpointError(f"{path}: holds a JSON {type(spec).__name__}; {expected}")
    missing = [key for key in SPEC_KEYS if key not in spec]
    if missing:
        raise CheckpointError(f"{path}: missing key(s) {missing}; {expected}")
    return spec


def build_from_spec(spec: Mapping[str, Any]) -> Classifier:
    """An untrained network as model.json describes it. A spec with `label: {kind, shape}` (SPEC 3, a
    non-category label) is the backbone wrapped in the label head of that shape; its label tensors are a
    buffer of the state_dict, zero until loaded."""
    model = build_model(spec["arch"], in_channels=spec["in_channels"], num_classes=spec["num_classes"],
                        image_size=spec["image_size"], mean=spec.get("mean"), std=spec.get("std"),
                        **spec.get("arch_args", {}))
    label = spec.get("label")
    if label and label.get("kind") != "category":
        from advpipe.models.label_heads import wrap_label_model  # only label models need it
        model = wrap_label_model(model, torch.zeros(spec["num_classes"], *label["shape"]))
    return model


def check_fits_data(model_dir: str | os.PathLike, input_shape: tuple[int, ...], classes: list[str],
                    dataset: str) -> None:
    """CheckpointError unless the model was trained on inputs of `input_shape` (C, H, W) and on `classes`,
    those of `dataset` (named in the message); the network would otherwise fail deep inside or mislabel."""
    spec = read_spec(model_dir)
    path = Path(model_dir) / "model.pt"
    trained = (spec["in_channels"], spec["image_size"], spec["image_size"])
    if tuple(input_shape) != trained:
        raise CheckpointError(f"{path}: trained on inputs of shape {trained} (model.json) but dataset {dataset!r} "
                              f"has inputs of shape {tuple(input_shape)}; expected a model trained on that "
                              "dataset (retrain it, or give it the dataset it was trained on)")
    if list(spec["classes"]) != list(classes):
        raise CheckpointError(f"{path}: trained on {spec['num_classes']} classes {list(spec['classes'])[:10]} "
                              f"(model.json) but dataset {dataset!r} has {len(classes)} classes "
                              f"{list(classes)[:10]}; expected a model trained on that dataset's classes")


def load_trained(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild the model described by model_dir/model.json and load model.pt, in eval mode.

    The state_dict is read with weights_only=True: a checkpoint never executes pickled code.
    """
    spec = read_spec(model_dir)
    try:
        model = build_from_spec(spec)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{Path(model_dir) / 'model.json'}: cannot build the network it describes ({err}); "
                              "expected an architecture of the registry with valid arguments") from err
    path = Path(model_dir) / "model.pt"
    expected = f"expected a state_dict of plain tensors for {spec['arch']!r}, as save_trained writes"
    if not path.is_file():
        raise CheckpointError(f"{path}: file does not exist; {expected}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message suggests weights_only=False, i.e. running the code; keep only what it refused.
        refused = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: was not an allowed global|\.?\n|$)", str(err))
        raise CheckpointError(f"{path}: refused to load ({refused.group(1) if refused else str(err).splitlines()[0]}): "
                              f"it holds more than plain tensors and loading it would run pickled code; "
                              f"{expected}") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({err}); {expected}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}; {expected}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: does not match architecture {spec['arch']!r}: {err}; {expected}") from err
    for name, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN or Inf; expected finite weights "
                                  "(did training diverge? see train_log.csv)")
    return model.to(device).eval()
