"""foolbox-3 attacks as engine attacks (issue 14 item 7): `{method: foolbox, attack: <foolbox-3 class>, eps, options}`.

Any model of any study gets them through config alone: the attack runs through the engine's `Attack.run` (batches,
criterion, success checked on each returned adversarial, norms), on `foolbox.PyTorchModel(model, bounds=(0, 1))`
(inputs are pixels in [0,1]; the model normalises inside). The criterion is foolbox's Misclassification of the
class the engine attacks: by default the model's own clean prediction (`{kind: misclassification, on:
prediction}`), as SPEC 4's score.py took `label = argmax(model.predictions(image))`.

- Fixed-budget attacks (foolbox's FixedEpsilonAttack: FGSM, L2/Linf BIM, PGD, additive noise, ...) need `eps`, a
  number or a grid, in the attack's own norm (foolbox's `distance`: Linf for FGSM); one outcome per eps, from
  foolbox's clipped adversarials.
- Minimal attacks (foolbox's MinimizationAttack: DeepFool, C&W, Boundary, blur, contrast reduction, blended
  uniform noise, salt-and-pepper, ...) run unbounded (`epsilons=None`) and report `distance`: the L2 of the found
  adversarial in [0,1] units, inf where the engine's criterion says it is no adversarial, as the engine's own
  minimal attacks (cw). An `eps` (an L2 budget or a grid) only says where an outcome counts as a success.

foolbox draws its random numbers from torch's (and a few attacks from numpy's) global generator: each batch (and
each eps of a grid) runs with both seeded from the attack's `seed` (one draw per batch of a generator seeded once
per run, per eps as derive_seed(seed, eps) like the engine's gradient attacks), restored afterwards, so a run is
deterministic on the CPU, an eps's outcome does not depend on the rest of the grid, and the caller's generators
are left alone.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from advpipe.attacks.base import Attack, AttackContext, parse_eps, register, seed_int
from advpipe.attacks.spaces import class_scores

DEFAULT_CRITERION = {"kind": "misclassification", "on": "prediction"}

# SPEC 4's score.py ran these 22 foolbox-1.x attacks (foolbox.attacks.<name>), each built as Attack(model,
# criterion) and called with its defaults. The foolbox-3 class that does the same thing, or None where foolbox 3
# has none. Semantics that moved (foolbox 1 searched a line of budgets inside the attack; foolbox 3 answers one eps
# or a grid) are noted; the engine answers a grid, the battery reads each sample's smallest successful L2 off it.
FOOLBOX1_TO_3: dict[str, str | None] = {
    "FGSM": "LinfFastGradientAttack",  # fb1: alias of GradientSignAttack (a 1000-eps line search up to 1)
    "GradientSignAttack": "LinfFastGradientAttack",
    "IterativeGradientSignAttack": "LinfBasicIterativeAttack",  # fb1: 10 unprojected sign steps per eps of a line
    "IterativeGradientAttack": "L2BasicIterativeAttack",  # fb1: RMS-normalised gradient steps (fb3: L2-normalised)
    "LBFGSAttack": None,  # Szegedy et al.'s box-constrained L-BFGS: not in foolbox 3
    "ApproximateLBFGSAttack": None,  # the same with finite-difference gradients: not in foolbox 3
    "DeepFoolAttack": "L2DeepFoolAttack",  # fb1: p = 2 under its default MSE distance
    "DeepFoolL2Attack": "L2DeepFoolAttack",
    "DeepFoolLinfinityAttack": "LinfDeepFoolAttack",
    "SaliencyMapAttack": None,  # JSMA: not in foolbox 3
    "GaussianBlurAttack": "GaussianBlurAttack",
    "ContrastReductionAttack": "LinearSearchContrastReductionAttack",  # fb1: a linear search over the contrast
    "SinglePixelAttack": None,  # not in foolbox 3 (PointwiseAttack only refines an adversarial it is given)
    "LocalSearchAttack": None,  # Narodytska & Kasiviswanathan: not in foolbox 3
    "SLSQPAttack": None,  # scipy SLSQP: not in foolbox 3
    "AdditiveNoiseAttack": None,  # fb1: the abstract base of the two below (no noise of its own; score.py's
    #                               Attack(model, criterion) cannot instantiate it)
    "AdditiveUniformNoiseAttack": "LinfAdditiveUniformNoiseAttack",  # fb1: uniform in [-w, w], a line of w
    "AdditiveGaussianNoiseAttack": "L2AdditiveGaussianNoiseAttack",  # fb1: Gaussian, a line of std
    "BlendedUniformNoiseAttack": "LinearSearchBlendedUniformNoiseAttack",
    "SaltAndPepperNoiseAttack": "SaltAndPepperNoiseAttack",
    "PrecomputedImagesAttack": None,  # fb1: looks up adversarials given at construction (score.py passed none);
    #                                   foolbox 3's DatasetAttack draws other images instead: not the same attack
    "BoundaryAttack": "BoundaryAttack",
}

# foolbox-3 attacks that never take a gradient of the model (decision- or score-based: they query its output
# only). Checked against foolbox 3.3's sources: none of these modules calls value_and_grad; HopSkipJump estimates
# gradients from decisions. Everything else (FGM/FGSM, BIM, PGD, MI-FGSM, DeepFool, C&W, EAD, NewtonFool, DDN, FMN,
# Brendel-Bethge, virtual adversarial, sparse L1 descent) differentiates the model.
GRADIENT_FREE = frozenset({
    "BoundaryAttack", "HopSkipJumpAttack", "GaussianBlurAttack", "L2ContrastReductionAttack",
    "BinarySearchContrastReductionAttack", "LinearSearchContrastReductionAttack",
    "LinearSearchBlendedUniformNoiseAttack", "SaltAndPepperNoiseAttack", "PointwiseAttack", "GenAttack",
    "SpatialAttack", "InversionAttack", "BinarizationRefinementAttack", "DatasetAttack",
    "L2AdditiveGaussianNoiseAttack", "L2AdditiveUniformNoiseAttack", "L2ClippingAwareAdditiveGaussianNoiseAttack",
    "L2ClippingAwareAdditiveUniformNoiseAttack", "LinfAdditiveUniformNoiseAttack",
    "L2RepeatedAdditiveGaussianNoiseAttack", "L2RepeatedAdditiveUniformNoiseAttack",
    "L2ClippingAwareRepeatedAdditiveGaussianNoiseAttack", "L2ClippingAwareRepeatedAdditiveUniformNoiseAttack",
    "LinfRepeatedAdditiveUniformNoiseAttack",
})

_NORM_NAMES = {0: "l0", 1: "l1", 2: "l2", math.inf: "linf"}


def foolbox_class(name: Any) -> type:
    """The foolbox-3 attack class `name` (a fixed-budget or minimal attack), else ValueError naming what to give."""
    import foolbox.attacks as fa
    from foolbox.attacks.base import FixedEpsilonAttack, MinimizationAttack

    cls = getattr(fa, name, None) if isinstance(name, str) else None
    if isinstance(cls, type) and issubclass(cls, (FixedEpsilonAttack, MinimizationAttack)):
        return cls
    if name in FOOLBOX1_TO_3:
        now = FOOLBOX1_TO_3[name]
        hint = f"; foolbox 3 calls it {now!r}" if now else "; it has no foolbox-3 counterpart"
        raise ValueError(f"attack: {name!r} is a foolbox-1 name{hint}")
    known = sorted(n for n in dir(fa) if isinstance(getattr(fa, n), type)
                   and issubclass(getattr(fa, n), (FixedEpsilonAttack, MinimizationAttack)))
    raise ValueError(f"attack: expected the name of a foolbox-3 attack class, got {name!r}; known: {known}")


def is_minimal_class(cls: type) -> bool:
    from foolbox.attacks.base import MinimizationAttack
    return issubclass(cls, MinimizationAttack)


def foolbox_norm(name: str) -> str | None:
    """The norm a fixed-budget foolbox-3 attack states its eps in (l0, l1, l2, linf); None for a minimal one."""
    cls = foolbox_class(name)
    if is_minimal_class(cls):
        return None
    return _NORM_NAMES.get(cls().distance.p)


def uses_gradients(attack_cfg: Mapping[str, Any]) -> bool:
    """Whether an `attacks:` entry differentiates the model: every engine attack (fgsm, bim, pgd, cw, search) does;
    a foolbox one unless its class is decision- or score-based (GRADIENT_FREE)."""
    if attack_cfg.get("method") != "foolbox":
        return True
    return attack_cfg.get("attack") not in GRADIENT_FREE


def spec4_attacks(eps_grid: list[float] | None = None) -> dict[str, dict[str, Any]]:
    """SPEC 4's score.py battery as `attacks:` entries (one per foolbox-3 class it maps to; the ones without a
    counterpart left out): minimal attacks unbounded, fixed-budget ones on `eps_grid` (their own norm)."""
    grid = eps_grid or [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    out = {}
    for name in dict.fromkeys(v for v in FOOLBOX1_TO_3.values() if v):
        cls = foolbox_class(name)
        out[f"fb_{name}"] = {"method": "foolbox", "attack": name, "eps": None if is_minimal_class(cls) else grid}
    return out


class _Scores(nn.Module):
    """pixels -> class scores of the engine's model (a label model decoded), the function foolbox sees. The model
    is held outside the module tree, so that eval() here (foolbox warns about training mode) leaves it alone."""

    def __init__(self, ctx: AttackContext):
        super().__init__()
        self.__dict__["ctx"] = ctx  # not a submodule: .eval() and .to() act on this wrapper only
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return class_scores(self.ctx.model, self.ctx.space.raw(x))


@contextmanager
def seeded_global_rng(gen: torch.Generator, device: torch.device) -> Iterator[None]:
    """torch's (CPU and `device`'s) and numpy's global generators seeded from one draw of `gen`, restored after."""
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=gen))
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        np.random.seed(seed % 2 ** 32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


def _finite_or_clean(x_adv: Tensor, x: Tensor) -> Tensor:
    """x_adv detached and clipped to [0,1], with the clean input for every sample holding a non-finite value."""
    bad = ~torch.isfinite(x_adv).flatten(1).all(1)
    return torch.where(bad.view(-1, *[1] * (x.dim() - 1)), x, x_adv).clamp(0.0, 1.0).detach()


@register("foolbox")
@dataclass(kw_only=True)
class FoolboxAttack(Attack):
    """A foolbox-3 attack class by name (`attack`), built with `options` (its constructor's keyword arguments),
    run on the engine's batches in pixel space with foolbox's Misclassification of the engine's reference class
    (default criterion: the model's own prediction). eps: a number or grid in the attack's own norm (fixed-budget
    attacks: required), or for minimal attacks an optional L2 budget (none: unbounded)."""

    attack: str
    eps: Any = None
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.criterion is None:
            self.criterion = dict(DEFAULT_CRITERION)
        super().__post_init__()
        cls = foolbox_class(self.attack)
        self._minimal = is_minimal_class(cls)
        if self.eps is None:
            if not self._minimal:
                raise ValueError(f"eps: {self.attack} is a fixed-budget attack; give an eps or a grid of them (in "
                                 "its own norm)")
        else:
            eps, grid = parse_eps(self.eps)
            self.eps = eps if grid else eps[0]
        if self.space != "pixels":
            raise ValueError(f"space: foolbox attacks work on pixels in [0,1] (bounds (0, 1)), got {self.space!r}")
        if self.criterion_.kind != "misclassification":
            raise ValueError(f"criterion: foolbox attacks run with foolbox's Misclassification criterion (on the "
                             f"label or the prediction), got kind {self.criterion_.kind!r}")
        if not isinstance(self.options, Mapping):
            raise ValueError(f"options: expected a mapping of {self.attack}'s keyword arguments, got {self.options!r}")
        try:
            self._fb = cls(**self.options)
        except TypeError as err:
            import inspect
            accepted = sorted(p for p in inspect.signature(cls.__init__).parameters if p != "self")
            raise ValueError(f"options: {self.attack} does not take {sorted(self.options)} ({err}); it accepts "
                             f"{accepted}") from err

    @property
    def minimal(self) -> bool:
        return self._minimal

    def make_generators(self, device: torch.device) -> list[torch.Generator | None]:
        """CPU generators that draw each batch's seed: one for a minimal attack (it runs once); one per eps for a
        fixed-budget one, seeded as the engine's gradient attacks seed theirs, so that an eps's outcome does not
        depend on the rest of the grid."""
        if self._minimal:
            return [torch.Generator().manual_seed(seed_int(self.seed))] + [None] * (len(self.eps_list) - 1)
        from advpipe.runtime import derive_seed
        return [torch.Generator().manual_seed(derive_seed(self.seed, eps)) for eps in self.eps_list]

    def attack_batch(self, ctx: AttackContext, z: Tensor, classes: Tensor,
                     generators: list[torch.Generator | None]) -> tuple[Tensor, Tensor | None]:
        import foolbox as fb

        fmodel = fb.PyTorchModel(_Scores(ctx), bounds=(0, 1), device=z.device)
        criterion = fb.criteria.Misclassification(classes)
        if self._minimal:
            with seeded_global_rng(generators[0], z.device):
                clipped = [self._fb(fmodel, z, criterion, epsilons=None)[1]]
        else:  # foolbox runs a grid one eps after the other anyway
            clipped = []
            for eps, gen in zip(self.eps_list, generators):
                with seeded_global_rng(gen, z.device):
                    clipped.append(self._fb(fmodel, z, criterion, epsilons=eps)[1])
        # A failed attack may hand back nan (DeepFool on a zero gradient): that sample keeps its clean input.
        out = torch.stack([_finite_or_clean(c, z) for c in clipped])
        if not self._minimal:
            return out, None
        x_adv = out[0]
        with torch.no_grad():  # the engine's own success check: the distance of a non-adversarial is inf
            ok = self.criterion_.success(class_scores(ctx.model, ctx.space.raw(x_adv)), classes)
        l2 = torch.linalg.vector_norm((x_adv - z).flatten(1), dim=1)
        distance = torch.where(ok, l2, torch.full_like(l2, math.inf))
        return x_adv.expand(len(self.eps_list), *z.shape), distance
