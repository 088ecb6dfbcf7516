"""Training objectives of SPEC 2 (wwoods/adversarial-explanations-cifar): adversarial training and the robust
additions (input-gradient penalty with adaptive psi), each called as objective(model, x, y) -> scalar loss.

Source: wwoods/adversarial-explanations-cifar main.py, `train` (the batch loop), `_model_train_batch`,
`_model_robust_get_grads`, `_model_robust_get_psi`; cited per function below.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from advpipe.models.base import Classifier
from advpipe.train.alp import ALP_DEFAULTS, AdversarialLogitPairing
from advpipe.train.loop import Objective, cross_entropy, task_loss
from advpipe.train.resume import load_objective_state, objective_state

# SPEC 2 config keys of build_objective and their defaults (main.py: TRAIN_ADV_*, ROBUST_* constants).
OBJECTIVE_DEFAULTS: dict[str, Any] = {
    "adversarial_training": False, "l2_min": False, "robust_additions": False,
    "adv_eps": 0.01, "adv_steps": 7, "l2min_eps": 0.1,
    "robust_z": 2, "robust_zeta": 0.2,
    "adapt_l_target": 1.5, "adapt_psi_0": 220, "adapt_psi": 0.02, "adapt_eps_pos": 1, "adapt_eps_neg": 0.01,
}
# SPEC 5 (gradient direction): the alignment penalty L_alpha (advpipe.train.alignment) and attack training
# (advpipe.train.attack_training) with an attack config dict, None = off (ricbl direct_method opts defaults).
DIRECTION_DEFAULTS: dict[str, Any] = {"cosine_penalty": False, "lambda_penalty": 0.1, "attack_training": None}
# All keys build_objective takes: SPEC 2's above, SPEC 4's adversarial logit pairing (advpipe.train.alp), SPEC 5's.
ALL_OBJECTIVE_DEFAULTS: dict[str, Any] = {**OBJECTIVE_DEFAULTS, **ALP_DEFAULTS, **DIRECTION_DEFAULTS}


def tandem_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """f_y - max_{j != y} f_j per sample of logits (B, C) (the 'tandem/unfair' output of SPEC 2)."""
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return true - others.max(1).values


def smoothed_score(logits: torch.Tensor, y: torch.Tensor, cls: torch.Tensor, tandem: torch.Tensor) -> torch.Tensor:
    """s per sample: the tandem margin where `tandem`, else the logit of class `cls` (B,)."""
    return torch.where(tandem, tandem_margin(logits, y), logits.gather(1, cls[:, None])[:, 0])


def input_gradient_penalty(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, cls: torch.Tensor,
                           tandem: torch.Tensor, z: float = 2.0) -> torch.Tensor:
    """mean_{batch, channels, pixels} |ds/dx|^z, differentiable w.r.t. the parameters (double backprop).

    logits = model(x) with x requiring grad; the gradient of sum_i s_i w.r.t. x gives each sample's ds_i/dx_i
    (samples are independent in eval mode; in train mode BN couples them, as in main.py _model_robust_get_grads).
    """
    (grad,) = torch.autograd.grad(smoothed_score(logits, y, cls, tandem).sum(), x, create_graph=True)
    return grad.abs().pow(z).mean()


def integrator_step(integration: float, ce: float, *, l_target: float = 1.5, eps_pos: float = 1.0,
                    eps_neg: float = 0.01) -> float:
    """I <- max(0, I + clip(-ln(ce / l_target), -eps_neg, +eps_pos)) (main.py _model_train_batch)."""
    if not math.isfinite(ce):
        raise FloatingPointError(f"batch cross-entropy is {ce}: training diverged")
    step = eps_pos if ce <= 0 else max(-eps_neg, min(eps_pos, -math.log(ce / l_target)))  # ln 0: clip to +eps_pos
    return max(0.0, integration + step)


class RobustAdditions:
    """Lipschitz-continuity defence of SPEC 2: loss = mean CE + psi * mean |ds/dx|^z, psi = psi_0 exp(psi_rate I).

    Per batch, as main.py _model_train_batch does: forward, CE, then I is updated with *this* batch's CE, then
    psi(I) weighs this batch's penalty. Per sample, s is the tandem margin with probability zeta, else the logit
    of a uniformly random class; both draws come from `generator` (CPU), so training is deterministic.
    The model's Half-Huber activation is an architecture option, not part of this objective.
    """

    def __init__(self, *, z: float = 2, zeta: float = 0.2, l_target: float = 1.5, psi_0: float = 220,
                 psi_rate: float = 0.02, eps_pos: float = 1, eps_neg: float = 0.01, num_classes: int | None = None,
                 generator: torch.Generator | None = None, integration: float = 0.0):
        if not 0 <= zeta <= 1:
            raise ValueError(f"zeta must be in [0, 1], got {zeta}")
        self.z, self.zeta, self.l_target = z, zeta, l_target
        self.psi_0, self.psi_rate, self.eps_pos, self.eps_neg = psi_0, psi_rate, eps_pos, eps_neg
        self.num_classes = num_classes
        self.generator = torch.Generator().manual_seed(0) if generator is None else generator
        self.integration = float(integration)
        self._ce_sum, self._ce_n = 0.0, 0

    @property
    def psi(self) -> float:
        """psi = psi_0 * exp(psi_rate * I) (main.py _model_robust_get_psi)."""
        return self.psi_0 * math.exp(self.psi_rate * self.integration)

    def draw(self, batch: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(random class (B,), tandem flag (B,)) for a batch, from the generator, on the CPU."""
        cls = torch.randint(0, num_classes, (batch,), generator=self.generator)
        tandem = torch.rand(batch, generator=self.generator) < self.zeta
        return cls, tandem

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_()  # the penalty needs d/dx; the caller's tensor is left alone
        logits = model(x)
        if self.num_classes is not None and logits.shape[1] != self.num_classes:
            raise ValueError(f"model gives {logits.shape[1]} scores, objective built for {self.num_classes} classes")
        ce = F.cross_entropy(logits, y)
        ce_value = ce.item()  # host sync per batch: the integrator is a Python float, as in the original
        self.integration = integrator_step(self.integration, ce_value, l_target=self.l_target,
                                           eps_pos=self.eps_pos, eps_neg=self.eps_neg)
        self._ce_sum += ce_value * len(y)
        self._ce_n += len(y)
        cls, tandem = self.draw(len(y), logits.shape[1])
        penalty = input_gradient_penalty(logits, x, y, cls.to(y.device), tandem.to(y.device), self.z)
        return ce + self.psi * penalty

    def state_dict(self) -> dict[str, float]:
        """The integrator I (the original's training_options['robust_integration']); JSON-serialisable."""
        return {"robust_integration": self.integration}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.integration = float(state["robust_integration"])

    def training_state(self) -> dict[str, Any]:
        """All mutable state, for resuming training mid-run (advpipe.train.resume): the integrator, the epoch's
        CE accumulators and the generator's state (a uint8 tensor; state_dict() stays the JSON record)."""
        return {"robust_integration": self.integration, "ce_sum": self._ce_sum, "ce_n": self._ce_n,
                "generator": self.generator.get_state()}

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        self.integration = float(state["robust_integration"])
        self._ce_sum, self._ce_n = float(state["ce_sum"]), int(state["ce_n"])
        self.generator.set_state(state["generator"])

    def epoch_log(self) -> dict[str, float]:
        """psi and I now, and the mean clean-batch CE since the last call (the original's printed 'Loss')."""
        ce = self._ce_sum / self._ce_n if self._ce_n else float("nan")
        self._ce_sum, self._ce_n = 0.0, 0
        return {"ce": ce, "psi": self.psi, "robust_integration": self.integration}


class AdversarialTraining:
    """Replace each batch by the perturbation search's output (untargeted, ascending CE of the true label), then
    apply `loss` to it (SPEC 2 --adversarial-training; main.py train builds AdversarialOptions per batch).

    L2 mode: eps (RMS) 0.01, 7 steps, no momentum, ensure_proper_minimization off. `l2_min`: mode "l2min" with
    `l2min_eps` 0.1; samples never misclassified keep delta = 0. `half_and_half`: each sample perturbed with
    probability 0.5 (the original turns it on with robust additions). No clamp to [0, 1], as in the original.

    BN: main.py calls m.train() before the batch loop and _adv_images inside it, so the search runs in train
    mode: batch statistics, and every search forward pass updates the BN running statistics. That is the
    default here; `search_in_train_mode=False` runs the search in eval mode (running stats untouched).
    """

    def __init__(self, *, eps: float = 0.01, steps: int = 7, l2_min: bool = False, l2min_eps: float = 0.1,
                 half_and_half: bool = False, loss: Objective = cross_entropy,
                 generator: torch.Generator | None = None, search_in_train_mode: bool = True):
        self.eps, self.steps, self.l2_min, self.l2min_eps = eps, steps, l2_min, l2min_eps
        self.half_and_half, self.loss, self.search_in_train_mode = half_and_half, loss, search_in_train_mode
        self.generator = torch.Generator().manual_seed(0) if generator is None else generator

    def perturb(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial batch x + delta (detached)."""
        from advpipe.attacks.search import perturbation_search  # lazy: attacks are not needed for plain training

        was_training = model.training
        model.train(self.search_in_train_mode)
        try:
            result = perturbation_search(
                model, x, y, eps=self.l2min_eps if self.l2_min else self.eps, steps=self.steps,
                mode="l2min" if self.l2_min else "standard", half_and_half=self.half_and_half,
                ensure_proper_minimization=False, generator=self.generator)
        finally:
            model.train(was_training)
        delta = result.delta
        if self.l2_min:  # unflipped samples stay clean (the search already returns 0 there; made explicit)
            delta = torch.where(result.met.to(delta.device).view(-1, *[1] * (delta.dim() - 1)), delta,
                                torch.zeros_like(delta))
        return (x + delta).detach()

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(model, self.perturb(model, x, y), y)

    # State and epoch log are the inner loss's (the robust integrator when combined).
    def state_dict(self) -> dict[str, Any]:
        return dict(self.loss.state_dict()) if hasattr(self.loss, "state_dict") else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if hasattr(self.loss, "load_state_dict"):
            self.loss.load_state_dict(state)

    def training_state(self) -> dict[str, Any]:
        """All mutable state for resuming (advpipe.train.resume): this generator's state and the inner loss's
        full state (build_objective shares one generator between both: restored twice to the same state)."""
        return {"generator": self.generator.get_state(), "loss": objective_state(self.loss)}

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        load_objective_state(self.loss, state["loss"])

    def epoch_log(self) -> dict[str, float]:
        return dict(self.loss.epoch_log()) if hasattr(self.loss, "epoch_log") else {}


def build_objective(cfg: Mapping[str, Any] | None, *, num_classes: int, seed: int) -> Objective:
    """Objective from a config dict (keys and defaults: ALL_OBJECTIVE_DEFAULTS); all modes off -> task_loss
    (cross-entropy; symmetric BCE for one-logit models).

    `alp: true` -> AdversarialLogitPairing (SPEC 4), alone: combined with adversarial_training or
    robust_additions it is refused (ALP has its own adversary and loss).

    Adversarial training + robust additions ("all"): the adversarial batch (half-and-half) goes into the robust
    loss, whose CE, integrator update and input gradient are all on that batch (main.py train ->
    _model_train_batch). One generator seeded by `seed` serves both; pass a seed distinct from the loop's.

    SPEC 5: `cosine_penalty` -> CosineAlignment (weight `lambda_penalty`; needs per-sample extras dx / dx_all),
    `attack_training` (an attack config dict) -> AttackTraining; both on: the penalty on the adversarial batch, as
    the original's flags combine. Neither combines with SPEC 2's or SPEC 4's objectives (refused).
    """
    cfg = {} if cfg is None else cfg
    unknown = sorted(set(cfg) - set(ALL_OBJECTIVE_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown objective key(s) {unknown}; known: {sorted(ALL_OBJECTIVE_DEFAULTS)}")
    c = {**ALL_OBJECTIVE_DEFAULTS, **cfg}
    if c["l2_min"] and not c["adversarial_training"]:
        raise ValueError("l2_min needs adversarial_training (the original: --l2-min only valid with it)")
    generator = torch.Generator().manual_seed(seed)
    direction = _direction_objective(c, generator)
    if direction is not None:
        return direction
    if c["alp"]:
        if c["adversarial_training"] or c["robust_additions"]:
            raise ValueError("alp: adversarial logit pairing brings its own adversary (pgdll) and loss; it does "
                             "not combine with adversarial_training or robust_additions (set those false)")
        return AdversarialLogitPairing(weight=c["alp_weight"], eps=c["alp_eps"], step=c["alp_step"],
                                       steps=int(c["alp_steps"]), label_smoothing=c["alp_label_smoothing"],
                                       generator=generator)
    loss: Objective = task_loss
    if c["robust_additions"]:
        loss = RobustAdditions(z=c["robust_z"], zeta=c["robust_zeta"], l_target=c["adapt_l_target"],
                               psi_0=c["adapt_psi_0"], psi_rate=c["adapt_psi"], eps_pos=c["adapt_eps_pos"],
                               eps_neg=c["adapt_eps_neg"], num_classes=num_classes, generator=generator)
    if c["adversarial_training"]:
        return AdversarialTraining(eps=c["adv_eps"], steps=int(c["adv_steps"]), l2_min=bool(c["l2_min"]),
                                   l2min_eps=c["l2min_eps"], half_and_half=bool(c["robust_additions"]),
                                   loss=loss, generator=generator)
    return loss


def _direction_objective(c: Mapping[str, Any], generator: torch.Generator) -> Objective | None:
    """SPEC 5's objective from the resolved config c, or None when neither of its modes is on."""
    penalty, attack_cfg = c["cosine_penalty"], c["attack_training"]
    if not isinstance(penalty, bool):
        raise ValueError(f"cosine_penalty: expected true or false, got {penalty!r}")
    if attack_cfg is not None and not isinstance(attack_cfg, Mapping):
        raise ValueError(f"attack_training: expected an attack config (a dict with 'method') or None, got "
                         f"{attack_cfg!r}")
    if not penalty and attack_cfg is None:
        return None
    others = [k for k in ("adversarial_training", "robust_additions", "alp") if c[k]]
    if others:
        mode = "cosine_penalty" if penalty else "attack_training"
        raise ValueError(f"{mode} (SPEC 5) does not combine with {others}: those objectives bring their own "
                         "adversary and loss (set them false)")
    from advpipe.attacks import build_attack, parse_fraction  # lazy: plain training needs no attacks
    from advpipe.train.alignment import CosineAlignment
    from advpipe.train.attack_training import AttackTraining

    loss: Objective = task_loss
    if penalty:
        loss = CosineAlignment(lambda_penalty=parse_fraction(c["lambda_penalty"], "lambda_penalty"))
    if attack_cfg is None:
        return loss
    try:
        attack = build_attack(attack_cfg)
    except ValueError as err:
        raise ValueError(f"attack_training: {err}") from err
    return AttackTraining(attack, loss=loss, generator=generator)
