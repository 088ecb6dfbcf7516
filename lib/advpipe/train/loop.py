"""The one training loop (SPEC 1 recipe: Adam 1e-3, cross-entropy, batch 128, crop+flip augmentation;
SPEC 2 recipe: SGD 0.1 momentum 0.9, wd 1e-4, lr steps, replicate padding; SPEC 5: symmetric BCE for one-logit
models, a fresh sample per epoch, per-sample extras such as ground-truth directions)."""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from advpipe.data.augment import random_crop_flip
from advpipe.models.base import Classifier
from advpipe.train import resume

# An objective maps (model, x, y) to a scalar loss; later studies plug in their own. One with `uses_extras = True`
# is called objective(model, x, y, extras) with the batch's rows of each per-sample extra (train_classifier).
Objective = Callable[..., torch.Tensor]
# epoch -> (x, y, extras or None): a fresh training sample per epoch (SPEC 5 Spheres draws one every epoch)
EpochData = Callable[[int], tuple[torch.Tensor, torch.Tensor, Mapping[str, torch.Tensor] | None]]


def symmetric_bce(d: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample y*softplus(-d) + (1-y)*softplus(d) of decision values d (B,): BCE-with-logits written
    symmetrically, as ricbl direct_method/train.py get_fns does (torch's form was asymmetric between classes)."""
    y = y.to(d.dtype)
    return y * F.softplus(-d) + (1 - y) * F.softplus(d)


def task_loss(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The plain training loss, batch mean: symmetric BCE of the decision value d for a one-logit binary model
    (`model.one_logit`; d = forward_normalized(normalize(x)), SPEC 5), cross-entropy of model(x) otherwise."""
    if getattr(model, "one_logit", False):
        return symmetric_bce(model.forward_normalized(model.normalize(x))[:, 0], y).mean()
    return F.cross_entropy(model(x), y)


# The name earlier studies use: the same function, so their defaults (build_objective, AdversarialTraining's loss)
# are this object and multi-class results are unchanged.
cross_entropy = task_loss


def make_optimizer(model: torch.nn.Module, recipe: Mapping[str, Any]) -> torch.optim.Optimizer:
    if recipe["optimizer"] == "adam":
        # betas: SPEC 5's direct method uses (0, 0.9); absent keeps torch's default, and every earlier model's run
        return torch.optim.Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"],
                                betas=tuple(recipe.get("betas") or (0.9, 0.999)))
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
                     objective: Objective = task_loss, log: Callable[[str], None] = print,
                     progress: bool = True,
                     on_epoch_end: Callable[[int, Classifier], Mapping[str, float]] | None = None,
                     state_path: str | os.PathLike | None = None, fingerprint: str | None = None,
                     epoch_data: EpochData | None = None, extras: Mapping[str, torch.Tensor] | None = None,
                     ) -> list[dict[str, float]]:
    """Train `model` in place on x (N,C,H,W) in [0,1] and y (N,); return one log row per epoch.

    Shuffling and augmentation draw from one generator seeded by `seed`: same seed, same model.
    Optional recipe keys: `lr_milestones` (epochs; after each, lr *= `lr_gamma`, default 0.1) and
    `augment.pad_mode` ("zeros" or "replicate"). An objective with `epoch_log()` adds its dict to each row;
    an objective holding state (state_dict) is saved by the caller. `on_epoch_end(epoch, model)` runs after
    each epoch (validation, best-checkpoint keeping) and its dict joins that epoch's row; it must leave the
    training random streams alone (evaluation draws nothing).

    Fresh data per epoch: with `epoch_data`, epoch e (1-based) trains on epoch_data(e) = (x_e, y_e, extras_e or
    None), called as the epoch starts; x and y then only identify the run in the resume fingerprint (pass epoch
    1's sample), and each epoch's size may differ. epoch_data must be a function of e (seed its draws from e):
    a resumed run calls it for the remaining epochs only, and only x, y are hashed. Shuffling (and augmentation)
    still draw from this loop's generator.

    Per-sample extras (e.g. SPEC 5's ground-truth directions dx): `extras` (name -> tensor with N rows, for fixed
    data) or epoch_data's third element. An objective with `uses_extras = True` is called objective(model, xb,
    yb, extras_b), each extra's rows of the batch moved to the device; other objectives ignore extras. Extras are
    not augmented, so crop/flip augmentation with such an objective is refused.

    Resuming (advpipe.train.resume): with `state_path`, the whole training state is saved there atomically
    after every epoch (model, optimizer, scheduler, all random streams, the objective's `training_state()` or
    `state_dict()`, the callback's `state_dict()`, the rows so far). A state saved for the same run (the
    caller's `fingerprint` plus the recipe, seed, data, extras and device) is restored at the start and training
    continues after its epoch, bit-identical on CPU to an uninterrupted run; any other state is logged and
    ignored. The caller deletes the file (resume.clear_state) once its outputs are written. Without
    `state_path` nothing is read or written and the random streams are the same either way.
    """
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model, recipe)
    sched = make_scheduler(opt, recipe)
    aug = recipe["augment"]
    pad_mode = aug.get("pad_mode", "zeros")
    augment = aug["crop_padding"] > 0 or aug["hflip"]
    epoch_log = getattr(objective, "epoch_log", None)
    uses_extras = bool(getattr(objective, "uses_extras", False))
    _check_data_args(uses_extras, augment, epoch_data, extras, len(x))
    bs = recipe["batch_size"]
    rows = []
    first = 1
    if state_path is not None:
        if not fingerprint:
            raise ValueError("train_classifier: state_path needs a fingerprint (resume.fingerprint of what "
                             "defines the run: model spec, recipe, dataset, seeds)")
        parts = [fingerprint, dict(recipe), seed, resume.tensor_digest(x, y), device.type,
                 type(objective).__qualname__, type(on_epoch_end).__qualname__]
        if epoch_data is not None:  # appended only when used: the keys of earlier runs stay what they were
            parts.append("epoch_data")
        if uses_extras and extras is not None:
            parts.append({k: resume.tensor_digest(v) for k, v in sorted(extras.items())})
        key = resume.fingerprint(*parts)
        saved = resume.load_state(state_path, key, log)
        if saved is not None:
            rows, first = _restore(saved, state_path, model, opt, sched, gen, objective, on_epoch_end, device,
                                   log)
    for epoch in tqdm(range(first, recipe["epochs"] + 1), desc="train", unit="epoch", disable=not progress,
                      initial=first - 1, total=recipe["epochs"]):
        if epoch_data is not None:
            xe, ye, extras_e = epoch_data(epoch)
            _check_epoch(epoch, xe, ye, extras_e, uses_extras)
        else:
            xe, ye, extras_e = x, y, extras
        model.train()
        n = len(xe)
        order = torch.randperm(n, generator=gen)
        loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per batch
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            xb = xe[idx]
            if augment:
                xb = random_crop_flip(xb, aug["crop_padding"], aug["hflip"], gen, pad_mode=pad_mode)
            # non_blocking: a blocking copy from pageable memory waits for the GPU to finish the previous batch (a host
            # sync per batch); the batch is a fresh tensor, never changed after the copy. A no-op on the CPU.
            xb, yb = xb.to(device, non_blocking=True), ye[idx].to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            if uses_extras:
                loss = objective(model, xb, yb, {k: v[idx].to(device, non_blocking=True) for k, v in extras_e.items()})
            else:
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
        if state_path is not None:  # after sched.step: the state as the next epoch starts from it
            resume.save_state(state_path, _state(key, epoch, model, opt, sched, gen, objective, on_epoch_end,
                                                 device, rows), verify=epoch == first)
    model.eval()
    return rows


def _check_data_args(uses_extras: bool, augment: bool, epoch_data, extras, n: int) -> None:
    """Refuse argument combinations train_classifier cannot honour, before any training."""
    if epoch_data is not None and extras is not None:
        raise ValueError("train_classifier: with epoch_data, extras come from epoch_data (its third element); "
                         "pass extras=None")
    if uses_extras and augment:
        raise ValueError("train_classifier: the objective uses per-sample extras, which are not augmented; "
                         "set augment crop_padding 0 and hflip false")
    if uses_extras and epoch_data is None and extras is None:
        raise ValueError("train_classifier: the objective uses per-sample extras; pass extras or epoch_data")
    if extras is not None:
        _check_rows("extras", extras, n)


def _check_epoch(epoch: int, x: torch.Tensor, y: torch.Tensor, extras, uses_extras: bool) -> None:
    if len(y) != len(x):
        raise ValueError(f"epoch_data({epoch}): {len(x)} inputs but {len(y)} labels")
    if uses_extras:
        if extras is None:
            raise ValueError(f"epoch_data({epoch}): the objective uses per-sample extras, got None")
        _check_rows(f"epoch_data({epoch}) extras", extras, len(x))


def _check_rows(name: str, extras: Mapping[str, torch.Tensor], n: int) -> None:
    bad = {k: len(v) for k, v in extras.items() if len(v) != n}
    if bad:
        raise ValueError(f"{name}: every extra needs one row per sample ({n}); got {bad}")


def _state(key: str, epoch: int, model: Classifier, opt: torch.optim.Optimizer, sched, gen: torch.Generator,
           objective: Objective, on_epoch_end, device: torch.device, rows: list[dict[str, float]]) -> dict:
    """Everything the next epoch depends on, as plain weights_only-loadable containers (resume module doc)."""
    return {"format": resume.FORMAT, "fingerprint": key, "epoch": epoch,
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": None if sched is None else sched.state_dict(), "generator": gen.get_state(),
            "rng": resume.global_rng_state(device), "objective": resume.objective_state(objective),
            "callback": resume.callback_state(on_epoch_end),
            "rows": [{k: v.item() if isinstance(v, np.generic) else v for k, v in r.items()} for r in rows]}


def _restore(saved: dict, state_path, model: Classifier, opt: torch.optim.Optimizer, sched, gen: torch.Generator,
             objective: Objective, on_epoch_end, device: torch.device,
             log: Callable[[str], None]) -> tuple[list[dict[str, float]], int]:
    """Apply a saved state; return (rows so far, first epoch to run). A state that does not fit (its
    fingerprint matched, so the caller's fingerprint misses something) is rolled back and training starts
    over, logged: the file is a cache."""
    before = resume.clone_state(_state("", 0, model, opt, sched, gen, objective, on_epoch_end, device, []))
    try:
        _apply(saved, model, opt, sched, gen, objective, on_epoch_end, device)
        rows, first = [dict(r) for r in saved["rows"]], int(saved["epoch"]) + 1
        if len(rows) != first - 1:
            raise ValueError(f"{len(rows)} log rows for {first - 1} epochs")
    except Exception as err:  # any misfit: see the docstring
        _apply(before, model, opt, sched, gen, objective, on_epoch_end, device)
        log(f"resume state {state_path} does not fit this run ({type(err).__name__}: {err}); starting over "
            "from epoch 1")
        return [], 1
    log(f"resuming from {state_path}: epochs 1..{first - 1} done")
    return rows, first


def _apply(state: dict, model: Classifier, opt: torch.optim.Optimizer, sched, gen: torch.Generator,
           objective: Objective, on_epoch_end, device: torch.device) -> None:
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if sched is not None:
        sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    resume.load_objective_state(objective, state["objective"])
    resume.load_callback_state(on_epoch_end, state["callback"])
    resume.set_global_rng_state(state["rng"], device)


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
