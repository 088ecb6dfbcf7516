"""Stages of the label-representations study (SPEC 3) up to the trained model: a label set's tensors, and one
(label, level) model trained on them with the validation split held out and the best epoch kept."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from advpipe.config import entry
from advpipe.data import dataset_info, load_split
from advpipe.data.splits import take, validation_level_split
from advpipe.io.atomic import atomic_path
from advpipe.io.tables import write_csv
from advpipe.labels import load_label_file, make_labels
from advpipe.labels.study import format_level, label_kinds
from advpipe.models import save_trained
from advpipe.models.base import Classifier
from advpipe.models.checkpoint import build_from_spec
from advpipe.models.label_heads import label_loss
from advpipe.pipeline.train import model_spec
from advpipe.runtime import derive_seed, seed_everything, select_device
from advpipe.train import resume, train_classifier


def make_label_set(config: Mapping[str, Any], label: str, out_path: str | os.PathLike, log=print) -> np.ndarray:
    """Write the (C, *shape) targets of label `label` of the study to out_path (.npy), from the config seed
    and the backbone dataset's classes (speech labels say the class names)."""
    study = config["labels"]
    kinds = label_kinds(study)
    if label not in kinds:
        raise KeyError(f"config key 'labels': no label {label!r} (known: {sorted(kinds)})")
    info = dataset_info(entry(config, "datasets", study["backbone"]["dataset"]), config["data_root"], config["seed"])
    labels = make_labels(kinds[label], info.num_classes, config["seed"], info.classes)
    log(f"label {label}: {kinds[label]}, shape {labels.shape}, range [{labels.min():.4g}, {labels.max():.4g}]")
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temporary name
            np.save(f, labels, allow_pickle=False)
    return labels


@torch.no_grad()
def evaluate(model: Classifier, x: torch.Tensor, y: torch.Tensor, objective: "LabelObjective",
             batch_size: int = 1000) -> tuple[float, float]:
    """(accuracy, mean loss per image) of `model` on (x, y) in eval mode, one forward pass per batch."""
    model.eval()
    device = next(model.parameters()).device
    correct, loss_sum = 0, 0.0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        out = objective.raw(model, xb)
        correct += (objective.scores(model, out).argmax(1) == yb).sum().item()
        loss_sum += objective.loss(out, yb).item() * len(yb)
    return correct / len(y), loss_sum / len(y)


class BestCheckpoint:
    """Validation after every epoch; keeps the state of the best epoch: highest validation accuracy, ties
    broken by lower validation loss (label_representations train.py). Draws no random numbers.

    `objective` = (raw(model, x) -> output, loss(output, y) -> mean loss, scores(model, output) -> (B, C)),
    so one forward pass per batch gives both the accuracy and the loss."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, objective: "LabelObjective", batch_size: int = 1000):
        self.x, self.y, self.objective, self.batch_size = x, y, objective, batch_size
        self.accuracy, self.val_loss, self.epoch, self.state = -1.0, float("inf"), 0, None

    def __call__(self, epoch: int, model: Classifier) -> dict[str, float]:
        acc, loss = evaluate(model, self.x, self.y, self.objective, self.batch_size)
        best = acc > self.accuracy or (acc == self.accuracy and loss < self.val_loss)
        if best:
            self.accuracy, self.val_loss, self.epoch = acc, loss, epoch
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {"val_accuracy": acc, "val_loss": loss, "best": float(best)}

    # The best-so-far travels with the resumable training state (advpipe.train.resume).
    def state_dict(self) -> dict:
        return {"accuracy": self.accuracy, "val_loss": self.val_loss, "epoch": self.epoch, "state": self.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.accuracy, self.val_loss, self.epoch = float(state["accuracy"]), float(state["val_loss"]), int(state["epoch"])
        self.state = None if state["state"] is None else {k: v.clone() for k, v in state["state"].items()}


class LabelObjective:
    """The training loss of SPEC 3 as a train-loop objective: CE on the logits for category, SmoothL1 between
    the label-space output and the class's label otherwise."""

    def __init__(self, kind: str, labels: torch.Tensor | None):
        self.category = kind == "category"
        self.loss = label_loss(kind, None if self.category else labels)

    def raw(self, model: Classifier, x: torch.Tensor) -> torch.Tensor:
        return model(x) if self.category else model.predict_label(x)

    def scores(self, model: Classifier, out: torch.Tensor) -> torch.Tensor:
        return out if self.category else model.decode(out)

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(self.raw(model, x), y)


def train_label_model(config: Mapping[str, Any], label: str, level: float, label_path: str | os.PathLike,
                      out_dir: str | os.PathLike, log=print, state_path: str | os.PathLike | None = None) -> dict:
    """Train the study's backbone on label `label` with `level` percent of the training split; write the best
    epoch's model.pt + model.json + train_log.csv to out_dir; return model.json's content."""
    study = config["labels"]
    backbone = study["backbone"]
    dataset_cfg = entry(config, "datasets", backbone["dataset"])
    seed = derive_seed(config["seed"], "labels", "train", label, format_level(level))
    seed_everything(seed)
    device = select_device(config["device"])
    spec = model_spec(backbone, dataset_cfg, config["data_root"], config["seed"])
    kind = label_kinds(study)[label]
    labels = torch.from_numpy(np.asarray(load_label_file(label_path, spec["num_classes"]), dtype=np.float32))
    spec["label"] = {"name": label, "kind": kind, "shape": list(labels.shape[1:])}
    model = build_from_spec(spec)
    if kind != "category":
        model.labels.copy_(labels)
    model = model.to(device)
    labels = labels.to(device)

    full = load_split(dataset_cfg, "train", config["data_root"], config["seed"])
    train_pos, val_pos = validation_level_split(len(full), study["validation_fraction"], level, config["seed"])
    train, val = take(full, train_pos), take(full, val_pos)
    spec["level"] = float(level)
    spec["split"] = {"train_images": len(train), "validation_images": len(val), "split_seed": config["seed"]}
    log(f"label {label} ({kind}), level {format_level(level)}%: {backbone['arch']} on {len(train)} images, "
        f"{len(val)} held out for validation")

    if len(train) % backbone["train"]["batch_size"] == 1:  # BatchNorm cannot train on a batch of one
        raise ValueError(f"label {label} level {format_level(level)}: {len(train)} training images leave a last "
                         f"batch of one image at batch_size {backbone['train']['batch_size']}; change "
                         "labels.backbone.train.batch_size or the level")
    objective = LabelObjective(kind, labels)
    best = BestCheckpoint(val.x, val.y, objective)
    # The label tensor is in the fingerprint: a resumed state overwrites the model's label buffer.
    fingerprint = resume.fingerprint("labels", spec, resume.tensor_digest(labels.cpu(), val.x, val.y))
    rows = train_classifier(model, train.x, train.y, backbone["train"], seed, objective=objective, log=log,
                            on_epoch_end=best, state_path=state_path, fingerprint=fingerprint)
    model.load_state_dict(best.state)
    model.eval()
    test = load_split(dataset_cfg, "test", config["data_root"], config["seed"])
    test_acc, test_loss = evaluate(model, test.x, test.y, objective)
    spec["metrics"] = {"best_epoch": best.epoch, "val_accuracy": best.accuracy, "val_loss": best.val_loss,
                       "test_accuracy": test_acc, "test_loss": test_loss}
    log(f"best epoch {best.epoch}: {spec['metrics']}")
    out_dir = Path(out_dir)
    write_csv(pd.DataFrame(rows), out_dir / "train_log.csv")
    save_trained(out_dir, model, spec)  # model.json last: its presence marks a complete folder
    if state_path is not None:
        resume.clear_state(state_path)
    return spec
