"""Adversarial logit pairing (ALP, Kannan et al. 2018) as a training objective (SPEC 4 "ALP").

Source: tensorflow/models research/adversarial_logit_pairing, train.py (the loss) and adversarial_attack.py
(the "pgdll_EPS_STEP_NITER" adversary); the released Tiny ImageNet "alp05" checkpoint used
train_adv_method = pgdll_16_2_10, train_lp_weight = 0.5, label_smoothing = 0.1.

What the original does, and how it maps here:

- Adversary (adversarial_attack.py generate_pgd_ll -> generate_pgd_common): the target is the least-likely class
  argmin of the clean logits; it DOES use a random start, start = clip(x + U(-eps, eps), max(x - eps, lo),
  min(x + eps, hi)); each of NITER steps takes the gradient of sum_i softmax_CE(one_hot(target_i), logits_i) and
  moves x <- clip(x - step * sign(grad), x - eps, x + eps) clipped to the image bounds, i.e. it DESCENDS the
  cross-entropy of the target class (perturbation_multiplier = -1). eps and step are given in 1/255 units of the
  image range. No rounding to the 8-bit grid. Here: the shared engine's PGD with criterion targeted /
  least_likely (targeted attacks descend the "ce" loss hook, which is summed per sample), L-inf, projection "clip"
  (clamp to [x - eps, x + eps], then to [0, 1]: the original's clip order), random_start, quantize off.
- The adversary runs on model_fn(x, is_training=False) (train.py), i.e. the whole model in inference mode: BN on
  its running statistics, which it does not update. Here the model is put in eval mode around the engine call
  and restored afterwards (the engine also freezes BN statistics itself: attacks.base.frozen_norm_stats).
- Loss (train.py): one training-mode forward pass of the concatenated batch [x; x_adv] with labels [y; y],
  tf.losses.softmax_cross_entropy(label_smoothing=0.1) (mean over the 2B samples; smoothing y*(1-s) + s/C, the
  same as torch's label_smoothing), plus tf.losses.mean_squared_error(f(x), f(x_adv), weights=lambda), which is
  lambda times the mean over all B*C logit differences squared. Weight decay (1e-4 there) is the recipe's.

Random starts: the engine seeds its random start from the attack's `seed` on every call, so each batch gets a
seed drawn from this objective's own generator (seeded by build_objective); the generator is the only state
to save for resuming.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from advpipe.models.base import Classifier

# Config keys of the ALP objective and their defaults (the released "alp05" Tiny ImageNet run).
ALP_DEFAULTS: dict[str, Any] = {
    "alp": False, "alp_weight": 0.5, "alp_eps": "16/255", "alp_step": "2/255", "alp_steps": 10,
    "alp_label_smoothing": 0.1,
}

SEED_BOUND = 2 ** 31 - 1  # per-batch attack seeds are drawn in [0, SEED_BOUND)


def alp_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, *, weight: float,
             label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, cross-entropy, pairing) from the logits of x and x_adv (each (B, C)) of ONE forward pass:
    CE_ls([f(x); f(x_adv)], [y; y]) + weight * mean((f(x) - f(x_adv))^2)."""
    ce = F.cross_entropy(torch.cat([logits_clean, logits_adv]), torch.cat([y, y]), label_smoothing=label_smoothing)
    pairing = (logits_clean - logits_adv).pow(2).mean()
    return ce + weight * pairing, ce, pairing


class AdversarialLogitPairing:
    """objective(model, x, y) -> CE_ls([x; x_adv]) + weight * MSE(f(x), f(x_adv)), x_adv from targeted PGD toward
    the least-likely class (L-inf eps, step, steps, random start) built from the shared attack engine.

    `weight` 0 is plain adversarial training on the mixed batch (the original skips the pairing term then).
    """

    def __init__(self, *, weight: float = 0.5, eps: float | str = "16/255", step: float | str = "2/255",
                 steps: int = 10, label_smoothing: float = 0.1, generator: torch.Generator | None = None):
        from advpipe.attacks import build_attack, parse_fraction  # lazy: plain training needs no attacks

        self.weight = parse_fraction(weight, "alp_weight")
        if not 0 <= label_smoothing <= 1:
            raise ValueError(f"alp_label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.attack = build_attack({
            "method": "pgd", "criterion": {"kind": "targeted", "targets": "least_likely"}, "norm": "linf",
            "eps": eps, "step_size": step, "steps": steps, "random_start": True, "projection": "clip",
            "clamp": "box", "loss": "ce", "quantize": False, "space": "pixels"})
        self.generator = torch.Generator().manual_seed(0) if generator is None else generator
        self._sums: torch.Tensor | None = None  # (ce * n, pairing * n, n) since the last epoch_log, on the device

    @property
    def eps(self) -> float:
        return float(self.attack.eps)

    def perturb(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_adv detached, least-likely targets) for a batch: the engine's PGD on the model in eval mode (the
        original's is_training=False), training mode restored afterwards; one attack seed per batch."""
        self.attack.seed = int(torch.randint(0, SEED_BOUND, (), generator=self.generator))
        was_training = model.training
        model.eval()
        try:
            result = self.attack(model, x.detach(), y, check_success=False)
        finally:
            model.train(was_training)
        return result.x_adv.detach(), result.classes

    def loss(self, model: Classifier, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The ALP loss for a given adversarial batch: one forward pass of [x; x_adv] in the model's mode."""
        logits = model(torch.cat([x, x_adv]))
        clean, adv = logits.split(len(x))
        total, ce, pairing = alp_loss(clean, adv, y, weight=self.weight, label_smoothing=self.label_smoothing)
        sums = torch.stack([ce.detach() * len(x), pairing.detach() * len(x),
                            torch.full((), float(len(x)), device=ce.device)])  # full: no host sync
        # a resumed state's sums arrive on the CPU: moved once, not each batch's sums to the CPU (a sync per batch)
        self._sums = sums if self._sums is None else self._sums.to(sums.device) + sums
        return total

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv, _ = self.perturb(model, x, y)
        return self.loss(model, x, x_adv, y)

    def epoch_log(self) -> dict[str, float]:
        """Mean cross-entropy (over the mixed batches) and mean logit-pairing MSE since the last call."""
        if self._sums is None:
            return {"ce": float("nan"), "logit_pairing": float("nan")}
        ce, pairing, n = self._sums.tolist()
        self._sums = None
        return {"ce": ce / n, "logit_pairing": pairing / n}

    def training_state(self) -> dict[str, Any]:
        """All mutable state for resuming (advpipe.train.resume): the generator and the epoch's sums."""
        return {"generator": self.generator.get_state(),
                "sums": None if self._sums is None else self._sums.detach().cpu().tolist()}

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        sums = state.get("sums")
        self._sums = None if sums is None else torch.tensor(sums, dtype=torch.float32)
