"""Stage train: build a model from its config entry, train it, save model.pt + model.json + train_log.csv."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from advpipe.config import entry
from advpipe.data import dataset_info, load_split
from advpipe.io.tables import write_csv
from advpipe.models import save_trained
from advpipe.models.checkpoint import build_from_spec
from advpipe.runtime import derive_seed, seed_everything, select_device
from advpipe.train import build_objective, evaluate_accuracy, resume, train_classifier


def model_spec(model_cfg: Mapping[str, Any], dataset_cfg: Mapping[str, Any], data_root: str, seed: int) -> dict:
    """What model.json records: enough to rebuild the network without the config."""
    info = dataset_info(dataset_cfg, data_root, seed)
    norm = model_cfg["normalize"]
    if norm == "dataset":
        mean, std = list(info.mean), list(info.std)
    elif isinstance(norm, Mapping):  # given explicitly, e.g. SPEC 3's CIFAR std (0.2023, 0.1994, 0.2010)
        mean, std = list(norm["mean"]), list(norm["std"])
    else:
        mean = std = None
    return {
        "arch": model_cfg["arch"], "arch_args": dict(model_cfg["arch_args"]),
        "in_channels": info.in_channels, "image_size": info.image_size, "num_classes": info.num_classes,
        "classes": list(info.classes), "mean": mean, "std": std,
        "dataset": dict(dataset_cfg), "train": dict(model_cfg["train"]),
    }


def run(config: Mapping[str, Any], model_name: str, out_dir: str | os.PathLike, log=print,
        state_path: str | os.PathLike | None = None) -> dict:
    """Train config model `model_name` into out_dir; return model.json's content. With `state_path` (outside the
    outputs), the training state is saved there every epoch and a rerun of a killed job resumes from it."""
    model_cfg = entry(config, "models", model_name)
    dataset_cfg = entry(config, "datasets", model_cfg["dataset"])
    seed = derive_seed(config["seed"], "train", model_name)
    seed_everything(seed)
    device = select_device(config["device"])
    spec = model_spec(model_cfg, dataset_cfg, config["data_root"], config["seed"])
    train = load_split(dataset_cfg, "train", config["data_root"], config["seed"])
    test = load_split(dataset_cfg, "test", config["data_root"], config["seed"])
    model = build_from_spec(spec).to(device)
    log(f"training {model_name}: {model_cfg['arch']} on {len(train.y)} images of {model_cfg['dataset']}")
    # The objective draws its own random numbers (random classes, half-and-half masks): its own seed.
    objective_seed = derive_seed(config["seed"], "objective", model_name)
    objective = build_objective(model_cfg["train"]["objective"], num_classes=spec["num_classes"],
                                seed=objective_seed)
    rows = train_classifier(model, train.x, train.y, model_cfg["train"], seed, objective=objective, log=log,
                            state_path=state_path, fingerprint=resume.fingerprint("train", spec, objective_seed))
    if hasattr(objective, "state_dict"):
        spec["objective_state"] = objective.state_dict()  # e.g. the psi integrator (SPEC 2)
    spec["metrics"] = {"train_accuracy": evaluate_accuracy(model, train.x, train.y),
                       "test_accuracy": evaluate_accuracy(model, test.x, test.y)}
    log(f"accuracy: {spec['metrics']}")
    out_dir = Path(out_dir)
    write_csv(pd.DataFrame(rows), out_dir / "train_log.csv")
    save_trained(out_dir, model, spec)  # model.json last: its presence marks a complete folder
    if state_path is not None:
        resume.clear_state(state_path)
    return spec
