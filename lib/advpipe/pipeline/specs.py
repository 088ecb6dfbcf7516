"""The resolved config entries each job depends on (DESIGN "Rules and scripts"). Rules pass them as params, so
Snakemake's params trigger reruns exactly what a config change touches, and stage functions take them instead of
the whole config. Tests call the same resolvers. No torch here: the Snakefile imports this module."""
from __future__ import annotations

import json
from typing import Any, Mapping

from advpipe.config import entry
from advpipe.sources import has_ground_truth_dx, resolve_space


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
    """What running model `model_name` depends on: its entry, its dataset's entry, the seed."""
    # `seeds` only asks for copies (config.expand_seeds): listing them must not retrain the first one
    model = {k: v for k, v in entry(config, "models", model_name).items() if k != "seeds"}
    return canonical({"model_name": model_name, "model": model, "dataset": entry(config, "datasets", model["dataset"]),
                      "seed": config["seed"]})


def train_job(config: Mapping[str, Any], model_name: str) -> dict[str, Any]:
    """What training model `model_name` depends on: model_job, plus, only for a model that uses them (so no other
    model's params change), the attacks its training runs (`train_attacks`: {role: entry with its name}, resolved
    as attack jobs resolve them) and the estimator of dx its cosine penalty reads (`dx_estimator`)."""
    job = model_job(config, model_name)
    recipe = job["model"].get("train", {})
    objective = recipe.get("objective", {})
    used = {"attack_training": objective.get("attack_training"), "select_attack": recipe.get("select_attack")}
    attacks = {role: {"name": name, **resolve_space(entry(config, "attacks", name), job["dataset"])}
               for role, name in used.items() if name}
    if attacks:
        job["train_attacks"] = attacks
    estimator = dx_estimator(config, job["model"]["dataset"]) if objective.get("cosine_penalty") else None
    if estimator:
        job["dx_estimator"] = estimator
    return canonical(job)


def dx_estimator(config: Mapping[str, Any], dataset_name: str) -> str | None:
    """The estimator whose dx a dataset without a ground truth uses (direction.estimates); None where the dataset
    carries its own (SPEC 5's synthetic data) or none is configured."""
    if has_ground_truth_dx(entry(config, "datasets", dataset_name)):
        return None
    return config.get("direction", {}).get("estimates", {}).get(dataset_name)


def attack_job(config: Mapping[str, Any], model_name: str, attack_name: str) -> dict[str, Any]:
    """What attack `attack_name` on model `model_name` depends on (`space: data` resolved to the model's dataset's
    range)."""
    job = model_job(config, model_name)
    return canonical({**job, "attack_name": attack_name,
                      "attack": resolve_space(entry(config, "attacks", attack_name), job["dataset"]),
                      "num_saved_images": config["represent"]["num_saved_images"]})
