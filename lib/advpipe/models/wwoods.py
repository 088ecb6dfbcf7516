"""Import the published checkpoints of wwoods/adversarial-explanations-cifar (SPEC 2) as `preact_resnet` folders.

The authors' file is `torch.save({'model_params': Model.state_dict(), 'training_options': {...}})`
(main.py `_model_save`), where training_options['arch'] holds their `__main__.cifar10_preprocess`
function. It is read here by a restricted unpickler: only tensor rebuilding, storages, OrderedDict and
plain values resolve; a `__main__` global becomes an inert `ForeignGlobal` that refuses to be called;
any other global is refused. No code from the file runs, and the function need not exist.

Key layout (model.py `Model`, read from the repository; S = 3 stages of n blocks):
    input_offset                    (2, 3) buffer: row 0 mean, row 1 std   -> mean, std
    pipe.0.weight                   stem conv3x3 (w, 3, 3, 3), no bias    -> body.0.weight
    pipe.{s}.{b}.pre.0.*            block BN (s = 1..3, b = 0..n-1)        -> body.{s}.{b}.pre.0.*
    pipe.{s}.{b}.pre.1.d            HHReLU delta (robust nets only)        -> arch_args hhrelu_delta
    pipe.{s}.{b}.main.0.weight      conv3x3 (stride 2 at b=0, s>1)         -> body.{s}.{b}.main.0.weight
    pipe.{s}.{b}.main.1.*           BN                                     -> body.{s}.{b}.main.1.*
    pipe.{s}.{b}.main.2.d           HHReLU delta                           -> hhrelu_delta
    pipe.{s}.{b}.main.3.weight      conv3x3, zero at init                  -> body.{s}.{b}.main.3.weight
    pipe.{s}.0.shortcut.weight      conv3x3 on `pre`, s = 2, 3 only        -> body.{s}.0.shortcut.weight
    pipe.4.*                        final BN                               -> body.4.*
    pipe.5.d                        final HHReLU delta                     -> hhrelu_delta
    pipe.6                          AvgPool2d(8), no state                 -> body.6 (global pool)
    pipe.7.weight, pipe.7.bias      1x1 conv to logits (10, 4w, 1, 1)      -> head.weight (10, 4w), head.bias
BN `*` = weight, bias, running_mean, running_var, num_batches_tracked.
"""
from __future__ import annotations

import hashlib
import math
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from advpipe.models.base import Classifier
from advpipe.models.checkpoint import CheckpointError, load_trained, save_trained
from advpipe.models.preact import PreActResNet

SOURCE = "wwoods/adversarial-explanations-cifar"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# main.py: ROBUST_ADAPT_PSI_0 and ROBUST_ADAPT_PSI; psi = 220 * exp(0.02 * robust_integration).
PSI_0, PSI_RATE = 220.0, 0.02
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_EXPECTED = (f"expected a checkpoint of {SOURCE} (torch.save of {{'model_params': state_dict with "
             "'input_offset' and 'pipe.*' keys, 'training_options': {...}}), holding only tensors and plain values")


class ForeignGlobal:
    """Inert stand-in for a `__main__` global named in the file (the authors' `arch` function): records
    the name, cannot be called or given state, so the pickle can only carry it around as a value."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"

    def __call__(self, *args, **kwargs):
        raise _Refused(f"the pickle calls {self!r}")

    def __setstate__(self, state):
        raise _Refused(f"the pickle sets state on {self!r}")


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something beyond tensors and plain values."""


def _load_weights_only(path: Path) -> Any:
    """torch.load(weights_only=True), with an inert ForeignGlobal standing in for each `__main__` global the
    file names (the authors' `arch` function): torch reports them one at a time, so retry per name. Any
    other global stays refused by torch's own safe loader."""
    stand_ins: dict[str, ForeignGlobal] = {}
    while True:
        try:
            with torch.serialization.safe_globals([(g, n) for n, g in stand_ins.items()]):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            found = re.search(r"GLOBAL (__main__\.[A-Za-z_][A-Za-z0-9_]*) was not an allowed global", str(err))
            if not found or found.group(1) in stand_ins or len(stand_ins) >= 16:
                raise _Refused(f"torch's safe loader refused it: {str(err).splitlines()[0]}") from err
            stand_ins[found.group(1)] = ForeignGlobal("__main__", found.group(1).split(".", 1)[1])


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model_params, training_options) of an authors' .pt file (zip or legacy torch format), on the CPU.

    CheckpointError naming the file if it is missing, truncated, corrupt, not of this shape, or asks to
    run code. No pickled code runs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file does not exist; {_EXPECTED}")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # torch's own test for its zip format
    try:
        if is_zip:
            with zipfile.ZipFile(path) as z:
                # torch.load hands TorchScript archives to torch.jit.load, which runs their code.
                if any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in z.namelist()):
                    raise _Refused("it is a TorchScript archive")
        obj = _load_weights_only(path)
    except _Refused as err:
        raise CheckpointError(f"{path}: refused to load ({err}): loading it would run code from the file; "
                              f"{_EXPECTED}") from err
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError,
            KeyError, AttributeError, TypeError, IndexError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(err).__name__}: {err}); "
                              f"{_EXPECTED}") from err
    if not isinstance(obj, dict) or not {"model_params", "training_options"} <= set(obj):
        what = f"a dict with keys {sorted(map(str, obj))}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise CheckpointError(f"{path}: holds {what}; {_EXPECTED}")
    params, options = obj["model_params"], obj["training_options"]
    if not isinstance(params, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in params.items()):
        raise CheckpointError(f"{path}: 'model_params' is not a state_dict of named tensors; {_EXPECTED}")
    if not isinstance(options, dict) or not isinstance(options.get("robust_additions"), bool):
        raise CheckpointError(f"{path}: 'training_options' lacks the boolean 'robust_additions'; {_EXPECTED}")
    return dict(params), options


def _block_keys(stage: int, block: int, shortcut: bool, hhrelu: bool) -> Iterator[tuple[str, str]]:
    """(source key, our key) pairs of one block; `d` keys map to '' (they become hhrelu_delta)."""
    src, dst = f"pipe.{stage}.{block}.", f"body.{stage}.{block}."
    yield from ((f"{src}pre.0.{k}", f"{dst}pre.0.{k}") for k in _BN)
    if hhrelu:
        yield f"{src}pre.1.d", ""
    yield f"{src}main.0.weight", f"{dst}main.0.weight"
    yield from ((f"{src}main.1.{k}", f"{dst}main.1.{k}") for k in _BN)
    if hhrelu:
        yield f"{src}main.2.d", ""
    yield f"{src}main.3.weight", f"{dst}main.3.weight"
    if shortcut:
        yield f"{src}shortcut.weight", f"{dst}shortcut.weight"


def key_map(blocks_per_stage: int, hhrelu: bool) -> dict[str, str]:
    """Every key of the authors' state_dict -> our PreActResNet key ('' for HHReLU `d`; the 1x1-conv
    head and input_offset are reshaped/split by `convert_state_dict`)."""
    pairs = [("input_offset", "mean+std"), ("pipe.0.weight", "body.0.weight")]
    for stage in (1, 2, 3):
        for block in range(blocks_per_stage):
            pairs += _block_keys(stage, block, shortcut=(block == 0 and stage > 1), hhrelu=hhrelu)
    pairs += [(f"pipe.4.{k}", f"body.4.{k}") for k in _BN]
    if hhrelu:
        pairs.append(("pipe.5.d", ""))
    pairs += [("pipe.7.weight", "head.weight"), ("pipe.7.bias", "head.bias")]
    return dict(pairs)


def infer_arch(params: Mapping[str, torch.Tensor], path: Path) -> tuple[int, int]:
    """(depth, width) from the number of blocks per stage and the stem's output channels."""
    blocks: dict[int, set[int]] = {}
    for key in params:
        m = re.fullmatch(r"pipe\.(\d+)\.(\d+)\.pre\.0\.weight", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    counts = {stage: len(b) for stage, b in sorted(blocks.items())}
    n = counts.get(1, 0)
    if set(counts) != {1, 2, 3} or set(counts.values()) != {n} or any(b != set(range(n)) for b in blocks.values()):
        raise CheckpointError(f"{path}: expected 3 stages (pipe.1-3) of equally many blocks, found blocks per "
                              f"stage {counts}; {_EXPECTED}")
    stem = params.get("pipe.0.weight")
    if stem is None or stem.dim() != 4 or tuple(stem.shape[1:]) != (3, 3, 3):
        raise CheckpointError(f"{path}: 'pipe.0.weight' should be the stem conv3x3 on 3 colour channels, "
                              f"got shape {None if stem is None else tuple(stem.shape)}; {_EXPECTED}")
    return 6 * n + 2, int(stem.shape[0])


def _plain(value: Any) -> Any:
    """JSON-able copy of a training_options value; the stand-in function becomes its dotted name."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, ForeignGlobal):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor) and value.numel() <= 64:
        return _plain(value.tolist())
    return f"<{type(value).__name__}>"


def psi(robust_integration: float) -> float:
    """The robust loss weight after training: 220 * exp(0.02 * I) (main.py _model_robust_get_psi)."""
    return PSI_0 * math.exp(PSI_RATE * robust_integration)


def convert_state_dict(params: Mapping[str, torch.Tensor], options: Mapping[str, Any],
                       path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(our state_dict, arch_args) for the authors' `params`; CheckpointError naming `path` on any mismatch."""
    depth, width = infer_arch(params, path)
    hhrelu = options["robust_additions"]
    mapping = key_map((depth - 2) // 6, hhrelu)
    # Checkpoints from torch < 0.4.1 lack BN's num_batches_tracked; it only matters for momentum=None.
    optional = {k for k in mapping if k.endswith("num_batches_tracked")}
    missing = sorted(set(mapping) - set(params) - optional)
    unexpected = sorted(set(params) - set(mapping))
    if missing or unexpected:
        hint = (" (HHReLU `d` buffers and robust_additions disagree)"
                if any(k.endswith(".d") for k in missing + unexpected) else "")
        raise CheckpointError(f"{path}: not the authors' pre-activation ResNet layout{hint}: missing keys "
                              f"{missing[:8]}, unexpected keys {unexpected[:8]}; {_EXPECTED}")
    for key, value in params.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: tensor {key!r} holds NaN or Inf; expected finite weights")
    arch_args: dict[str, Any] = {"depth": depth, "width": width, "activation": "hhrelu" if hhrelu else "relu"}
    if hhrelu:
        ds = [params[k] for k, v in mapping.items() if v == ""]
        deltas = {float(d) for d in ds if d.numel() == 1}
        if any(d.numel() != 1 for d in ds) or len(deltas) != 1 or not min(deltas) > 0:
            raise CheckpointError(f"{path}: HHReLU `d` buffers should hold one positive scalar delta shared "
                                  f"by every activation, got {sorted(deltas)[:8]}; {_EXPECTED}")
        arch_args["hhrelu_delta"] = deltas.pop()
    offset = params["input_offset"]
    if tuple(offset.shape) != (2, 3) or not (offset[1] > 0).all():
        raise CheckpointError(f"{path}: 'input_offset' should be (2, 3): mean row, positive std row; got "
                              f"{offset.tolist()}; {_EXPECTED}")
    state: dict[str, torch.Tensor] = {"mean": offset[0].reshape(1, 3, 1, 1).float(),
                                      "std": offset[1].reshape(1, 3, 1, 1).float()}
    for src, dst in mapping.items():
        if dst in ("", "mean+std") or src not in params:
            continue
        value = params[src]
        if src == "pipe.7.weight":
            if value.dim() != 4 or tuple(value.shape[2:]) != (1, 1):
                raise CheckpointError(f"{path}: 'pipe.7.weight' should be a 1x1 conv (classes, features, 1, 1), "
                                      f"got shape {tuple(value.shape)}; {_EXPECTED}")
            value = value[:, :, 0, 0]  # 1x1 conv on a 1x1 map == Linear
        state[dst] = value
    for src, dst in mapping.items():  # absent num_batches_tracked (old torch): start from 0
        if src in optional and src not in params:
            state[dst] = torch.tensor(0, dtype=torch.long)
    _check_arch_option(options.get("arch"), depth, width, state["head.weight"].shape[0], path)
    return state, arch_args


def _check_arch_option(arch: Any, depth: int, width: int, num_classes: int, path: Path) -> None:
    """training_options['arch'] = [in_size, preprocess_fn, block_lens, block_fts, nclass] must agree with
    the weights (main.py MODEL_ARCH); a file without it is judged by its weights alone."""
    if not isinstance(arch, (list, tuple)) or len(arch) != 5:
        return
    n = (depth - 2) // 6
    want = [32, [n] * 3, [width, 2 * width, 4 * width], 10]
    got = [arch[0], _plain(arch[2]), _plain(arch[3]), arch[4]]
    if got != want or num_classes != 10:
        raise CheckpointError(f"{path}: training_options['arch'] {_plain(list(arch))} disagrees with the weights "
                              f"(depth {depth}, width {width}, {num_classes} classes) or is not CIFAR-10's "
                              f"[32, fn, [n]*3, [w, 2w, 4w], 10]; {_EXPECTED}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_checkpoint(src: str | os.PathLike, dest_dir: str | os.PathLike) -> Classifier:
    """Convert an authors' .pt file into a `preact_resnet` model folder (model.pt + model.json) and return
    the model as `load_trained(dest_dir)` gives it (eval mode)."""
    src = Path(src)
    params, options = read_checkpoint(src)
    state, arch_args = convert_state_dict(params, options, src)
    num_classes = state["head.weight"].shape[0]
    if num_classes != len(CIFAR10_CLASSES):
        raise CheckpointError(f"{src}: {num_classes} logits; expected CIFAR-10's 10 classes")
    mean, std = state["mean"].flatten().tolist(), state["std"].flatten().tolist()
    model = PreActResNet(in_channels=3, num_classes=num_classes, image_size=32, mean=mean, std=std, **arch_args)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # shapes that do not fit (e.g. stage widths not w, 2w, 4w)
        raise CheckpointError(f"{src}: weights do not fit preact_resnet {arch_args}: {err}; {_EXPECTED}") from err
    integration = options.get("robust_integration")
    real = isinstance(integration, (int, float)) and not isinstance(integration, bool)
    spec = {
        "arch": "preact_resnet", "arch_args": arch_args, "in_channels": 3, "image_size": 32,
        "num_classes": num_classes, "classes": list(CIFAR10_CLASSES), "mean": mean, "std": std,
        "imported_from": {
            "source": SOURCE, "path": str(src.resolve()), "sha256": _sha256(src),
            "training_options": _plain(options),
            "psi": psi(float(integration)) if real and math.isfinite(integration) else None,
        },
    }
    save_trained(dest_dir, model, spec)
    return load_trained(dest_dir)
