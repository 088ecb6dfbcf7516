"""The one training loop (SPEC 1 recipe: Adam 1e-3, cross-entropy, batch 128, crop+flip augmentation;
SPEC 2 recipe: SGD 0.1 momentum 0.9, wd 1e-4, lr steps, replicate padding)."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from tqdm import tqdm

from advpipe.data.augment import random_crop_flip
from advpipe.models.base import Classifier

# An objective maps (model, x, y) to a scalar loss; later studies plug in their own.
Objective = Callable[[Classifier, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def make_optimizer(model: torch.nn.Module, recipe: Mapping[str, Any]) -> torch.optim.Optimizer:
    if recipe["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    return torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                           weight_decay=recipe["weight_decay"])


def make_scheduler(opt: torch.optim.Optimizer,
                   recipe: Mapping[str, Any]) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Step decay (SPEC 2: lr x0.1 at epochs 170 and 195): after epoch m of `lr_milestones`, lr *= `lr_gamma`.

    Stepped once per epoch, so epochs m+1.. run at the decayed lr, as the original's 0-based `epoch >= m`
    (wwoods/adversarial-explanations-cifar main.py train). None without milestones: no scheduler at all.
    """
    milestones = list(recipe.get("lr_milestones") or [])
    if not milestones:
        return None
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=recipe.get("lr_gamma", 0.1))


def train_classifier(model: Classifier, x: torch.Tensor, y: torch.Tensor, recipe: Mapping[str, Any], seed: int,
                     objective: Objective = cross_entropy, log: Callable[[str], None] = print,
                     progress: bool = True,
                     on_epoch_end: Callable[[int, Classifier], Mapping[str, float]] | None = None,
                     ) -> list[dict[str, float]]:
    """Train `model` in place on x (N,C,H,W) in [0,1] and y (N,); return one log row per epoch.

    Shuffling and augmentation draw from one generator seeded by `seed`: same seed, same model.
    Optional recipe keys: `lr_milestones` (epochs; after each, lr *= `lr_gamma`, default 0.1) and
    `augment.pad_mode` ("zeros" or "replicate"). An objective with `epoch_log()` adds its dict to each row;
    an objective holding state (state_dict) is saved by the caller. `on_epoch_end(epoch, model)` runs after
    each epoch (validation, best-checkpoint keeping) and its dict joins that epoch's row; it must leave the
    training random streams alone (evaluation draws nothing).
    """
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model, recipe)
    sched = make_scheduler(opt, recipe)
    aug = recipe["augment"]
    pad_mode = aug.get("pad_mode", "zeros")
    epoch_log = getattr(objective, "epoch_log", None)
    n, bs = len(x), recipe["batch_size"]
    rows = []
    for epoch in tqdm(range(1, recipe["epochs"] + 1), desc="train", unit="epoch", disable=not progress):
        model.train()
        order = torch.randperm(n, generator=gen)
        loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per batch
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            xb = x[idx]
            if aug["crop_padding"] > 0 or aug["hflip"]:
                xb = random_crop_flip(xb, aug["crop_padding"], aug["hflip"], gen, pad_mode=pad_mode)
            xb, yb = xb.to(device), y[idx].to(device)
            opt.zero_grad(set_to_none=True)
            loss = objective(model, xb, yb)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
        row = {"epoch": epoch, "loss": loss_sum.item() / n, "lr": opt.param_groups[0]["lr"]}  # lr this epoch used
        extra = ""
        if epoch_log is not None:
            obj_row = epoch_log()
            row.update(obj_row)
            extra = "".join(f", {k} {v:.4g}" for k, v in obj_row.items())
        if on_epoch_end is not None:
            end_row = dict(on_epoch_end(epoch, model))
            row.update(end_row)
            extra += "".join(f", {k} {v:.4g}" for k, v in end_row.items())
        rows.append(row)
        log(f"epoch {epoch}: loss {row['loss']:.4f}{extra}")
        if sched is not None:
            sched.step()
    model.eval()
    return rows


@torch.no_grad()
def evaluate_accuracy(model: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of `model` on (x, y), in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(x), batch_size):
        pred = model(x[start:start + batch_size].to(device)).argmax(1).cpu()
        correct += (pred == y[start:start + batch_size]).sum().item()
    return correct / max(len(x), 1)
