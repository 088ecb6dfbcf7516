"""model.json of a trained-model folder, read without torch: the figure, table and label jobs need only the
class names and shapes, and importing torch costs a job 1.5-4 s of start-up (advpipe.models imports it)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from advpipe.errors import InputError


class CheckpointError(InputError, RuntimeError):
    """A model folder is missing a file, or a file is truncated, corrupt or unsafe; names the file."""


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
