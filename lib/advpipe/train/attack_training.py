"""SPEC 5's PGD (adversarial) training through the shared attack engine: each batch is replaced by the attack's
adversarial examples and the loss is taken on them only.

Source: ricbl/gradient-direction-of-robust-models, src/{direct,indirect}_method/train.py RobustTraining.train_fn
and attacks.get_attack: the attack runs on the model in eval mode (training mode restored afterwards); then
x = adversarial.detach() and the usual loss (plus the alignment penalty when that flag is on too) follows.
Which attack (PGD-L-inf, 40 steps, random start, ascent on (1-2y)d or CE, [-1, 1] bounds) is the caller's
attack config; here only its use.

Random starts: the engine seeds them from the attack's `seed` on every call, so each batch gets a seed drawn from
this objective's own generator (as advpipe.train.alp); the generator is the state to save for resuming.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from advpipe.models.base import Classifier
from advpipe.train.alp import SEED_BOUND
from advpipe.train.loop import Objective, task_loss
from advpipe.train.resume import load_objective_state, objective_state


class AttackTraining:
    """objective(model, x, y[, extras]) -> loss(model, attack(x), y[, extras]) with `attack` an engine Attack of
    one eps (advpipe.attacks.build_attack). `loss`: task_loss, or CosineAlignment (then extras are passed on)."""

    def __init__(self, attack: Any, *, loss: Objective = task_loss, generator: torch.Generator | None = None):
        if attack.is_grid or attack.minimal:
            raise ValueError("attack_training: needs a fixed-budget attack with one eps (a number, not a grid)")
        self.attack, self.loss = attack, loss
        self.uses_extras = bool(getattr(loss, "uses_extras", False))
        self.generator = torch.Generator().manual_seed(0) if generator is None else generator

    def perturb(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial batch (detached): the engine's attack on the model in eval mode, one seed per batch."""
        self.attack.seed = int(torch.randint(0, SEED_BOUND, (), generator=self.generator))
        was_training = model.training
        model.eval()
        try:
            result = self.attack.run(model, x.detach(), y, batch_size=max(len(x), 1), progress=False,
                                     check_success=False)
        finally:
            model.train(was_training)
        return result.x_adv.detach()

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor,
                 extras: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        x_adv = self.perturb(model, x, y)
        return self.loss(model, x_adv, y, extras) if self.uses_extras else self.loss(model, x_adv, y)

    def epoch_log(self) -> dict[str, float]:
        return dict(self.loss.epoch_log()) if hasattr(self.loss, "epoch_log") else {}

    def training_state(self) -> dict[str, Any]:
        """All mutable state for resuming (advpipe.train.resume): the generator and the inner loss's state."""
        return {"generator": self.generator.get_state(), "loss": objective_state(self.loss)}

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        load_objective_state(self.loss, state["loss"])
