"""Stage train: build a model from its config entry, train it, save model.pt + model.json + train_log.csv."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from advpipe.config import ConfigError
from advpipe.data import dataset_info, load_split
from advpipe.data.splits import take, validation_level_split
from advpipe.io.tables import write_csv
from advpipe.models import save_trained
from advpipe.labels import load_label_file
from advpipe.models.checkpoint import build_from_spec
from advpipe.models.input_size import check_input_size
from advpipe.pipeline.specs import train_stream
from advpipe.train.validation import BestCheckpoint, LabelObjective, evaluate
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


def dataset_file(dataset_cfg: Mapping[str, Any], data_root: str) -> str:
    """Where a dataset's images come from, for messages: its file or folder, else its source under data_root."""
    if "path" in dataset_cfg:
        path = Path(dataset_cfg["path"])
        return str(path if path.is_absolute() else Path(data_root) / path)
    return f"{dataset_cfg.get('source')}" + ("" if dataset_cfg.get("source") == "digits" else f" under {data_root}")


def run(*, model_name: str, model: Mapping[str, Any], dataset: Mapping[str, Any], seed: int,
        out_dir: str | os.PathLike, label_path: str | os.PathLike | None = None, data_root: str = "data",
        device: str = "auto", state_path: str | os.PathLike | None = None, log=print) -> dict:
    """Train model `model_name` (its resolved entry and dataset: advpipe.pipeline.specs.model_job) into out_dir;
    return model.json's content.

    A model with a `label:` key regresses the label set at `label_path` (SPEC 3; loss SmoothL1, or CE for
    category). `train.validation_fraction` holds out a validation split first and keeps the best epoch (highest
    validation accuracy, ties to the lower loss); `train.level` trains on that percent of the rest (SPEC 3's
    data efficiency). With `state_path` (outside the outputs) the training state is saved every epoch and a
    rerun of a killed job resumes from it.
    """
    train_seed = derive_seed(seed, train_stream(model_name, model))
    seed_everything(train_seed)
    device = select_device(device)
    recipe = model["train"]
    spec = model_spec(model, dataset, data_root, seed)
    labels, kind = None, "category"
    if "label" in model:
        kind = model["label"]["kind"]
        labels = torch.from_numpy(np.asarray(load_label_file(label_path, spec["num_classes"]), dtype=np.float32))
        spec["label"] = {"name": model["label"]["name"], "kind": kind, "shape": list(labels.shape[1:])}
    # Images too small for the network fail here, naming the dataset, rather than deep inside its first forward
    # pass (one zero image through a copy built aside, which leaves the global RNG as it was).
    check_input_size(spec, model["dataset"], where=dataset_file(dataset, data_root))
    net = build_from_spec(spec)  # first draw from the seeded global RNG: the initial weights
    if labels is not None and kind != "category":
        net.labels.copy_(labels)
    net = net.to(device)
    full = load_split(dataset, "train", data_root, seed)
    test = load_split(dataset, "test", data_root, seed)
    train, val = full, None
    if recipe["validation_fraction"] is not None:
        train_pos, val_pos = validation_level_split(len(full), recipe["validation_fraction"], recipe["level"], seed)
        train, val = take(full, train_pos), take(full, val_pos)
        spec["level"] = float(recipe["level"])
        spec["split"] = {"train_images": len(train), "validation_images": len(val), "split_seed": seed}
    elif recipe["level"] != 100:
        raise ConfigError(f"config key 'models.{model_name}.train.level': a level below 100 needs "
                          "train.validation_fraction (the held-out share comes first, SPEC 3)")
    log(f"training {model_name}: {model['arch']} on {len(train)} images of {model['dataset']}"
        + (f", {len(val)} held out for validation" if val is not None else ""))
    if len(train) % recipe["batch_size"] == 1 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                                      for m in net.modules()):
        raise ConfigError(f"config key 'models.{model_name}.train.batch_size': {len(train)} training images leave a "
                          f"last batch of one image at batch_size {recipe['batch_size']}, on which BatchNorm cannot "
                          "train; change the batch size (or the level)")
    # The objective draws its own random numbers (random classes, half-and-half masks): its own seed.
    objective_seed = derive_seed(seed, "objective", model_name)
    if labels is not None:
        objective = LabelObjective(kind, labels.to(device))
    else:
        objective = build_objective(recipe["objective"], num_classes=spec["num_classes"], seed=objective_seed)
    validation = LabelObjective(kind, None if labels is None else labels.to(device))
    best = BestCheckpoint(val.x, val.y, validation) if val is not None else None
    # The label tensor is in the fingerprint: a resumed state overwrites the model's label buffer.
    digest = resume.tensor_digest(labels) if labels is not None else None
    rows = train_classifier(net, train.x, train.y, recipe, train_seed, objective=objective, log=log,
                            on_epoch_end=best, state_path=state_path,
                            fingerprint=resume.fingerprint("train", spec, objective_seed, digest))
    if best is not None:
        net.load_state_dict(best.state)
        net.eval()
        test_acc, test_loss = evaluate(net, test.x, test.y, validation)
        spec["metrics"] = {"best_epoch": best.epoch, "val_accuracy": best.accuracy, "val_loss": best.val_loss,
                           "test_accuracy": test_acc, "test_loss": test_loss}
    else:
        if hasattr(objective, "state_dict"):
            spec["objective_state"] = objective.state_dict()  # e.g. the psi integrator (SPEC 2)
        spec["metrics"] = {"train_accuracy": evaluate_accuracy(net, train.x, train.y),
                           "test_accuracy": evaluate_accuracy(net, test.x, test.y)}
    log(f"{model_name}: {spec['metrics']}")
    out_dir = Path(out_dir)
    write_csv(pd.DataFrame(rows), out_dir / "train_log.csv")
    save_trained(out_dir, net, spec)  # model.json last: its presence marks a complete folder
    if state_path is not None:
        resume.clear_state(state_path)
    return spec
