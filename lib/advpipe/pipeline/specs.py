"""The resolved config entries each job depends on (DESIGN "Rules and scripts"). Rules pass them as params, so
Snakemake's params trigger reruns exactly what a config change touches, and stage functions take them instead of
the whole config. Tests call the same resolvers. No torch here: the Snakefile imports this module."""
from __future__ import annotations

import json
from typing import Any, Mapping

from advpipe.config import entry


def canonical(section: Mapping[str, Any]) -> dict[str, Any]:
    """`section` with every mapping's keys sorted: Snakemake compares params in order, so a config whose keys
    were merely reordered (a YAML dump, a merge) would otherwise rerun every job."""
    return json.loads(json.dumps(section, sort_keys=True))


def train_stream(model_name: str, model_cfg: Mapping[str, Any]) -> str:
    """The name of a model's training random stream: `train/<model>`, or the one a generated entry keeps (the
    label study's `labels/train/<label>/<level>`), so its models are trained exactly as before the fold."""
    return model_cfg.get("streams", {}).get("train", f"train/{model_name}")


def attack_stream(model_name: str, attack_name: str, model_cfg: Mapping[str, Any]) -> str:
    """The name of an attack job's random stream: `attack/<model>/<attack>`, or the model's own (label study)."""
    return model_cfg.get("streams", {}).get("attack", f"attack/{model_name}/{attack_name}")


def model_job(config: Mapping[str, Any], model_name: str) -> dict[str, Any]:
    """What training or running model `model_name` depends on: its entry, its dataset's entry, the seed."""
    model = entry(config, "models", model_name)
    return canonical({"model_name": model_name, "model": model, "dataset": entry(config, "datasets", model["dataset"]),
                      "seed": config["seed"]})


def attack_job(config: Mapping[str, Any], model_name: str, attack_name: str) -> dict[str, Any]:
    """What attack `attack_name` on model `model_name` depends on."""
    return canonical({**model_job(config, model_name), "attack_name": attack_name,
                      "attack": entry(config, "attacks", attack_name),
                      "num_saved_images": config["represent"]["num_saved_images"]})
