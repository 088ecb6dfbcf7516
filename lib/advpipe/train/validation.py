"""Validation during training (a held-out split, the best epoch kept) and the training loss of label models
(SPEC 3): CE on the logits for category, SmoothL1 between the label-space output and the class's label otherwise.
Any model of the one train stage can use them (`train.validation_fraction`). BestByEps50: SPEC 5's best epoch,
the one with the highest validation eps50."""
from __future__ import annotations

import copy
import math
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


class BestByEps50:
    """After every epoch, attack the validation set over the attack's eps grid and keep the state of the epoch with
    the highest eps50 (SPEC 5; ties: the earlier epoch). ricbl direct_method/train.py validation_fn and
    metrics.py: error rate on clean data at eps 0, then under attack at each eps of the grid in order, eps50 by
    advpipe.metrics.robustness.eps50 (its RuntimeWarning when the grid never fools the model passes through).

    `attack`: an engine Attack (advpipe.attacks.build_attack) with one eps or an increasing grid; error = the
    prediction on the adversarial differs from the label. A copy of it runs every epoch with a seed drawn from
    this callback's own generator (`seed`), as the original draws fresh random starts each validation; no other
    stream is touched. The model is left in eval mode (the loop sets train mode each epoch)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, attack: Any, batch_size: int = 1000, seed: int = 0,
                 min_accuracy: float = 0.0):
        eps = [float(e) for e in attack.eps_list]
        if attack.minimal or not all(math.isfinite(e) for e in eps):
            raise ValueError("BestByEps50: needs a fixed-budget attack (finite eps or eps grid)")
        self.grid = eps if eps[0] == 0 else [0.0, *eps]  # the clean point first (an eps 0 is not attacked)
        if any(b <= a for a, b in zip(self.grid, self.grid[1:])):
            raise ValueError(f"BestByEps50: the eps grid must increase strictly, got {eps}")
        self.x, self.y, self.attack, self.batch_size = x, y, attack, batch_size
        # Epochs below this validation accuracy are not eligible: a network at chance (an adversarially trained one
        # that has not left it yet) has an error near 0.5 at every eps, and eps50 then marks a spurious crossing.
        self.min_accuracy = float(min_accuracy)
        self.generator = torch.Generator().manual_seed(seed)
        self.eps50, self.epoch, self.state = -1.0, 0, None

    def errors(self, model: Classifier) -> list[float]:
        """Validation error rate at each point of `grid` (clean first), one attack seed drawn per call."""
        from advpipe.train.alp import SEED_BOUND

        model.eval()
        device = next(model.parameters()).device
        x, y = self.x.to(device), self.y.to(device)
        attack = copy.copy(self.attack)  # the caller's attack keeps its seed
        attack.seed = int(torch.randint(0, SEED_BOUND, (), generator=self.generator))
        pred = attack.run(model, x, y, batch_size=self.batch_size, progress=False, store=False).pred
        pred = pred if attack.is_grid else pred[None]
        if len(pred) < len(self.grid):  # grid without eps 0: the clean predictions in front
            with torch.no_grad():
                clean = torch.cat([model(xb).argmax(1) for xb in x.split(self.batch_size)])
            pred = torch.cat([clean[None], pred])
        return (pred != y).double().mean(1).tolist()

    def __call__(self, epoch: int, model: Classifier) -> dict[str, float]:
        from advpipe.metrics.robustness import eps50

        err = self.errors(model)
        value = eps50(self.grid, err)
        best = value > self.eps50 and 1.0 - err[0] >= self.min_accuracy
        if best:
            self.eps50, self.epoch = value, epoch
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {"val_accuracy": 1.0 - err[0], "val_eps50": value, "best": float(best)}

    # The best-so-far and the generator travel with the resumable training state (advpipe.train.resume).
    def state_dict(self) -> dict:
        return {"eps50": self.eps50, "epoch": self.epoch, "state": self.state,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.eps50, self.epoch = float(state["eps50"]), int(state["epoch"])
        self.state = None if state["state"] is None else {k: v.clone() for k, v in state["state"].items()}
        self.generator.set_state(state["generator"])


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
