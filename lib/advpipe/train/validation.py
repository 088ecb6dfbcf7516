"""Validation during training (a held-out split, the best epoch kept) and the training loss of label models
(SPEC 3): CE on the logits for category, SmoothL1 between the label-space output and the class's label otherwise.
Any model of the one train stage can use them (`train.validation_fraction`)."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from advpipe.models.base import Classifier
from advpipe.models.label_heads import label_loss


@torch.no_grad()
def evaluate(model: Classifier, x: torch.Tensor, y: torch.Tensor, objective: LabelObjective,
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

    def __init__(self, x: torch.Tensor, y: torch.Tensor, objective: LabelObjective, batch_size: int = 1000):
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
