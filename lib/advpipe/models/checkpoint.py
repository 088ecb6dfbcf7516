"""Trained-model folders: model.pt (state_dict only) + model.json (how to rebuild it)."""
from __future__ import annotations

import io
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from advpipe.io.atomic import atomic_path
from advpipe.models.base import Classifier
from advpipe.models.registry import build_model
from advpipe.io.model_spec import SPEC_KEYS, CheckpointError, read_spec  # noqa: F401  (re-exported)


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


def build_from_spec(spec: Mapping[str, Any]) -> Classifier:
    """An untrained network as model.json describes it. A spec with `label: {kind, shape}` (SPEC 3, a
    non-category label) is the backbone wrapped in the label head of that shape; its label tensors are a
    buffer of the state_dict, zero until loaded. `one_logit: true` (SPEC 5) builds a binary model (num_classes 2)
    with one output; `input_shape` (the per-sample shape) reaches the architectures that take it (vectors)."""
    one_logit = bool(spec.get("one_logit", False))
    model = build_model(spec["arch"], in_channels=spec["in_channels"], num_classes=spec["num_classes"],
                        image_size=spec["image_size"], mean=spec.get("mean"), std=spec.get("std"),
                        input_shape=spec.get("input_shape"), one_logit=one_logit, **spec.get("arch_args", {}))
    note = model.init_note
    label = spec.get("label")
    if label and label.get("kind") != "category":
        if one_logit:
            raise ValueError("one_logit: a label model regresses label tensors; it has no one-logit form")
        from advpipe.models.label_heads import wrap_label_model  # only label models need it
        model = wrap_label_model(model, torch.zeros(spec["num_classes"], *label["shape"]))
    lesci = spec.get("defense", {}).get("lesci")
    if lesci:  # a LESCI-defended model (SPEC 4): the base network wrapped, its embedding a buffer until loaded
        from advpipe.defenses.lesci import wrap_lesci

        model = wrap_lesci(model, {**lesci, "num_classes": spec["num_classes"]})
    model.init_note = note  # the training log reads it from whatever wraps the network
    return model


def spec_input_shape(spec: Mapping[str, Any]) -> tuple[int, ...]:
    """The per-sample input shape model.json states: `input_shape`, or (in_channels, image_size, image_size) in
    specs written before it existed (images only)."""
    if spec.get("input_shape") is not None:
        return tuple(int(s) for s in spec["input_shape"])
    return (spec["in_channels"], spec["image_size"], spec["image_size"])


def check_fits_data(model_dir: str | os.PathLike, input_shape: tuple[int, ...], classes: list[str],
                    dataset: str) -> None:
    """CheckpointError unless the model was trained on inputs of `input_shape` (the per-sample shape: (C, H, W),
    or (D,) for vectors) and on `classes`, those of `dataset` (named in the message); the network would otherwise
    fail deep inside or mislabel."""
    spec = read_spec(model_dir)
    path = Path(model_dir) / "model.pt"
    trained = spec_input_shape(spec)
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
    state = read_state(path, expected)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = type(state).__name__ if not isinstance(state, dict) else "dict holding values other than tensors"
        raise CheckpointError(f"{path}: holds a {what}; {expected}")
    disagreement = _disagreement(spec, model.state_dict(), state)
    if disagreement:
        raise CheckpointError(f"{Path(model_dir) / 'model.json'} and {path} disagree (model.pt does not match the "
                              f"network model.json describes): {disagreement}; expected the "
                              "model.json written with that model.pt (a model.pt copied from another model? "
                              "retrain it, or restore its own model.json)")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: does not match architecture {spec['arch']!r}: {err}; {expected}") from err
    for name, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN or Inf; expected finite weights "
                                  "(did training diverge? see train_log.csv)")
    return model.to(device).eval()


# torch's weights-only unpickler names what it refused after this; the rest of its message advises loading the file
# with weights_only=False or allowlisting the global, i.e. running the file's code: never passed on.
_REFUSED = re.compile(r"WeightsUnpickler error: ([^\n]*?)(?: was not an allowed global|\.?\n|$)")
_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.*?)\s*(?:\n\nCheck the documentation|$)", re.S)
_ZIP = b"PK\x03\x04"


def read_state(path: str | os.PathLike, expected: str) -> Any:
    """torch.load(path) with weights_only=True; CheckpointError naming the file and the cause: a file whose pickle
    references code (refused: loading it would run that code) or one that is empty, truncated or not a checkpoint."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"{path}: empty file (0 bytes), a truncated or corrupt checkpoint; {expected}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "Unsupported global" in text or "was not an allowed global" in text:
            refused = _REFUSED.search(text)
            raise CheckpointError(f"{path}: refused to load ({refused.group(1) if refused else 'a global'}): it "
                                  "holds more than plain tensors and loading it would run pickled code; "
                                  f"{expected}") from None  # torch's text (advice to run the code) not chained
        detail = _DETAIL.search(text)
        cause = detail.group(1).splitlines()[0] if detail and detail.group(1) else type(err).__name__
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint, not a file torch.save writes ({cause}; "
                              f"it starts with {head!r}); {expected}") from None
    except Exception as err:  # noqa: BLE001 - whatever torch's readers raise on bytes that are no checkpoint
        kind = "a zip archive torch cannot read" if head.startswith(_ZIP) else f"it starts with {head!r}"
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(err).__name__}: {err}; {kind}); "
                              f"{expected}") from err


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _disagreement(spec: Mapping[str, Any], built: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> str:
    """'' when `state` (model.pt) fits the network model.json (`spec`) describes (`built`: its state_dict); else the
    field of model.json that disagrees with model.pt and the evidence, e.g. num_classes against the final layer."""
    def differs(key: str) -> bool:
        return key in built and key in state and _shape(built[key]) != _shape(state[key])

    arch = f"arch {spec['arch']!r} with arch_args {dict(spec.get('arch_args', {}))}"
    missing = [k for k in built if k not in state]
    unexpected = [k for k in state if k not in built]
    if missing or unexpected:
        parts = ([f"{len(missing)} tensor(s) it needs are not in model.pt (e.g. {missing[:3]})"] if missing else []) + \
            ([f"model.pt holds {len(unexpected)} tensor(s) it does not have (e.g. {unexpected[:3]})"]
             if unexpected else [])
        return f"{arch} in model.json: {'; '.join(parts)}"
    # Which field: the class count shows in the final layer (or a label model's label buffer), the input channels
    # in the normalisation buffers every Classifier carries; other shapes follow arch_args and image_size.
    if differs("labels") and state["labels"].ndim and built["labels"].shape[0] != state["labels"].shape[0]:
        return (f"num_classes {spec['num_classes']} in model.json vs {state['labels'].shape[0]} labels in model.pt's "
                f"labels buffer of shape {_shape(state['labels'])}")
    if differs("head.weight") and state["head.weight"].ndim and \
            built["head.weight"].shape[0] != state["head.weight"].shape[0]:
        outputs = state["head.weight"].shape[0]
        final = f"final layer (head.weight of shape {_shape(state['head.weight'])})"
        if spec.get("one_logit"):  # one output d for the 2 classes (SPEC 5)
            return (f"one_logit true in model.json (1 output for its {spec['num_classes']} classes) vs {outputs} "
                    f"outputs in model.pt's {final}")
        hint = " (a one-logit binary model, whose model.json says one_logit: true?)" if outputs == 1 else ""
        return f"num_classes {spec['num_classes']} in model.json vs {outputs} outputs in model.pt's {final}{hint}"
    if differs("mean") and state["mean"].ndim == 4:  # (1, C, 1, 1)
        return (f"in_channels {spec['in_channels']} in model.json vs {state['mean'].shape[1]} channel(s) in model.pt "
                f"(its normalisation buffer 'mean' has shape {_shape(state['mean'])})")
    shapes = [k for k in built if differs(k)]
    if shapes:
        shown = ", ".join(f"{k} {_shape(state[k])} in model.pt vs {_shape(built[k])} from model.json"
                          for k in shapes[:3])
        vector = spec.get("input_shape") is not None and len(spec["input_shape"]) != 3
        size = f"input_shape {list(spec['input_shape'])}" if vector else f"image_size {spec['image_size']}"
        return (f"{arch}, {size} in model.json give other layer shapes than model.pt's: "
                f"{shown}" + (f" (and {len(shapes) - 3} more)" if len(shapes) > 3 else ""))
    return ""
