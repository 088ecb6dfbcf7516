"""The perturbation search of wwoods/adversarial-explanations-cifar (`_adv_images`, SPEC 2), batched over samples.

One routine serves three uses: L2 adversarial training ("standard"), the minimal perturbations behind ARA ("l2min",
"btr") and explanations (`encourage=True`: descend the CE toward target labels). Details SPEC 2 leaves open follow
main.py at commit ce19735c (`_adv_images`, `AdversarialOptions`, `calculate_ara`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advpipe.attacks.base import Attack, AttackContext, seed_int, check_bool, check_int, check_positive, parse_fraction, register

MODES = ("standard", "l2min", "btr")
_LISTED = 50  # sample indices named in a minimisation error before it abbreviates


@dataclass
class SearchResult:
    """delta: (N, ...) detached, not clamped to [0,1] (SPEC 2 item 9). met: (N,) bool, the l2min/btr criterion held
    at some evaluated point (all True in standard mode, where delta is the last iterate whatever its size).
    first_met: (N,) int64, the step index t (number of updates applied) at which the criterion (follow == 0,
    in standard mode RMS(delta) >= eps) was first seen, -1 if never."""

    delta: Tensor
    met: Tensor
    first_met: Tensor


def step_sizes(total: float, steps: int) -> Tensor:
    """ss_t = S (T - t) / (T (T + 1) / 2), t = 0..T-1, float64: linearly decreasing, summing to S (SPEC 2 item 2).

    Same operation order as main.py's `size * (opts.steps - step) / (opts.steps * (opts.steps + 1) / 2)`, so the
    values are the original's Python floats bit for bit."""
    check_int("steps", steps, 1)
    t = torch.arange(steps, dtype=torch.float64)
    return float(total) * (steps - t) / (steps * (steps + 1) / 2)


def rms(v: Tensor) -> Tensor:
    """Per-sample sqrt(mean(v^2)) over all non-batch dims: norms.perturbation_norms' "RMS" of a difference, computed
    as main.py does (`pow(2).mean((1, 2, 3)).sqrt()`) so that normalised directions match it."""
    return v.pow(2).flatten(1).mean(1).sqrt()


def check_search_params(*, eps: float, steps: int, eps_overshoot: float, momentum: float, mode: str,
                        ensure_proper_minimization: bool) -> tuple[float, float, float]:
    """Validated (eps, eps_overshoot, momentum); ValueError naming the parameter."""
    eps = check_positive("eps", eps)
    check_int("steps", steps, 1)
    eps_overshoot = check_positive("eps_overshoot", eps_overshoot)
    momentum = parse_fraction(momentum, "momentum")
    if momentum >= 1:
        raise ValueError(f"momentum: must be in [0, 1), got {momentum!r}")
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}")
    check_bool("ensure_proper_minimization", ensure_proper_minimization)
    if ensure_proper_minimization and mode == "standard" and eps_overshoot <= 1:
        # Unit-RMS directions: RMS(delta_t) <= sum of the first t step sizes < S <= eps, so the check always fails.
        raise ValueError("ensure_proper_minimization: standard mode can reach RMS eps within half the steps only with "
                         "eps_overshoot > 1 (explanations use 5); set it to false (as adversarial training does)")
    return eps, eps_overshoot, momentum


def check_minimization(first_met: Tensor, steps: int, offset: int = 0) -> None:
    """main.py's ensure_proper_minimization: every sample must meet the criterion at a step t <= steps // 2, so that
    the remaining steps minimise. ValueError naming the late and never-met samples (indices + offset)."""
    late = (first_met > steps // 2).nonzero().flatten() + offset
    never = (first_met < 0).nonzero().flatten() + offset
    if len(late) or len(never):
        def names(idx: Tensor) -> str:
            more = f" ... ({len(idx)} in all)" if len(idx) > _LISTED else ""
            return f"{idx[:_LISTED].tolist()}{more}"
        parts = ([f"samples {names(late)} met the criterion only after step {steps // 2} of {steps}"] * bool(len(late))
                 + [f"samples {names(never)} never met it"] * bool(len(never)))
        raise ValueError(f"perturbation search: {'; '.join(parts)}; ensure_proper_minimization wants it within half "
                         "the steps so that the rest minimise (increase eps or steps)")


def perturbation_search(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int, eps_overshoot: float = 1.0,
                        momentum: float = 0.0, mode: str = "standard", encourage: bool = False,
                        half_and_half: bool = False, ensure_proper_minimization: bool = True,
                        generator: torch.Generator | None = None) -> SearchResult:
    """SPEC 2 `_adv_images`: delta_0 = 0; per step d = follow * g + (1 - follow) * (-delta), g = grad_delta CE(f(x +
    delta), y) (negated when `encourage`: y are targets to move toward), d /= 1e-8 + RMS(d), optional momentum, the
    half-and-half mask, delta += ss_t * d. follow: standard RMS(delta) < eps; l2min argmax == y; btr p_y > 1/C.

    l2min/btr evaluate once more after the last step and return the smallest-RMS delta at which follow was 0 (zeros
    if never: images already misclassified get 0). Gradients are taken w.r.t. delta only (no .grad on the model).

    The model's mode is left alone: attacks pass it in eval mode; adversarial training (main.py `train`) runs the
    search in train mode, where BN uses batch statistics and each of the search's forwards updates its running
    statistics, as in the original. `generator` draws the half-and-half mask (default: torch's global RNG, as
    main.py); it may live on the CPU while x is on a GPU.
    """
    eps, eps_overshoot, momentum = check_search_params(eps=eps, steps=steps, eps_overshoot=eps_overshoot,
                                                       momentum=momentum, mode=mode,
                                                       ensure_proper_minimization=ensure_proper_minimization)
    check_bool("encourage", encourage)
    check_bool("half_and_half", half_and_half)
    if encourage and mode != "standard":
        raise ValueError("encourage: works only in mode 'standard' (main.py: 'Cannot combine l2_min with "
                         "encourage_labels')")
    x = x.detach()
    n = x.shape[0]
    per_sample = (n,) + (1,) * (x.dim() - 1)
    sizes = step_sizes(eps * eps_overshoot, steps).tolist()
    minimise = mode != "standard"
    delta = torch.zeros_like(x)
    mom = torch.zeros_like(x) if momentum > 0 else None  # main.py: `if opts.momentum > 0`
    affected = None
    if half_and_half:
        # Drawn once per call, before the loop (main.py `affected = (torch.rand(N, 1, 1, 1) < 0.5).float()`).
        device = generator.device if generator is not None else x.device
        affected = (torch.rand(n, generator=generator, device=device) < 0.5).to(x.device, x.dtype).view(per_sample)
    first_met = torch.full((n,), -1, dtype=torch.int64, device=x.device)
    best = torch.zeros_like(x) if minimise else None
    best_ms = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
    for t in range(steps + minimise):  # l2min/btr: one extra evaluation of the last iterate
        with torch.enable_grad():  # callers may sit under no_grad
            delta.requires_grad_(True)
            logits = model(x + delta)
            loss = F.cross_entropy(logits, y, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), delta)
        delta, logits = delta.detach(), logits.detach()  # graph freed: in-place updates below are safe
        ms = delta.pow(2).flatten(1).mean(1)
        if mode == "standard":
            follow = ms < eps ** 2  # main.py compares mean squares, not RMS
        elif mode == "l2min":
            follow = logits.argmax(1) == y
        else:
            follow = logits.softmax(1).gather(1, y[:, None])[:, 0] > 1 / logits.shape[1]
        met = ~follow
        first_met = torch.where(met & (first_met < 0), t, first_met)
        if minimise:
            better = met & (ms < best_ms)  # strict: ties keep the earlier iterate, as main.py
            best_ms = torch.where(better, ms, best_ms)
            best = torch.where(better.view(per_sample), delta, best)
            if t == steps:
                break
        if encourage:
            grad = grad.neg_()
        # where() = main.py's follow * g + (1 - follow) * (-delta) for follow in {0, 1}, without 0 * inf = nan
        d = torch.where(follow.view(per_sample), grad, -delta)
        d = d.div_(rms(d).add_(1e-8).view(per_sample))
        if mom is not None:
            d = mom.mul_(momentum).add_(d, alpha=1 - momentum).clone()
        if affected is not None:
            d = d.mul_(affected)
        delta.add_(d, alpha=sizes[t])
    if ensure_proper_minimization:
        check_minimization(first_met, steps)
    if minimise:
        return SearchResult(best, best_ms.isfinite(), first_met)
    return SearchResult(delta, torch.ones(n, dtype=torch.bool, device=x.device), first_met)


@register("search")
@dataclass(kw_only=True)
class PerturbationSearch(Attack):
    """The SPEC 2 perturbation search as an untargeted attack (ascends the CE of y); eps is an RMS budget.

    mode "standard" is the adversarial-training attack (eps 0.01, 7 steps; needs ensure_proper_minimization false
    unless eps_overshoot > 1), "l2min"/"btr" the minimal perturbations of ARA. `seed` seeds the half-and-half mask.
    """

    eps: float
    steps: int
    eps_overshoot: float = 1.0
    momentum: float = 0.0
    mode: str = "standard"
    half_and_half: bool = False
    ensure_proper_minimization: bool = True

    @property
    def minimal(self) -> bool:
        """l2min/btr find the smallest RMS perturbation meeting their criterion; standard has a fixed budget."""
        return self.mode != "standard"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.space != "pixels" or self.criterion_.targeted:
            raise ValueError("search: works in pixel space and untargeted (eps is an RMS budget on [0,1] pixels)")
        self.eps, self.eps_overshoot, self.momentum = check_search_params(
            eps=self.eps, steps=self.steps, eps_overshoot=self.eps_overshoot, momentum=self.momentum,
            mode=self.mode, ensure_proper_minimization=self.ensure_proper_minimization)
        check_bool("half_and_half", self.half_and_half)

    def make_generators(self, device: torch.device) -> list[torch.Generator | None]:
        return [torch.Generator(device=device).manual_seed(seed_int(self.seed)) if self.half_and_half else None]

    def attack_batch(self, ctx: AttackContext, x: Tensor, y: Tensor,
                     generators: list[torch.Generator | None]) -> tuple[Tensor, Tensor | None]:
        result = perturbation_search(ctx.model, x, y, eps=self.eps, steps=self.steps,
                                     eps_overshoot=self.eps_overshoot, momentum=self.momentum, mode=self.mode,
                                     half_and_half=self.half_and_half,
                                     ensure_proper_minimization=self.ensure_proper_minimization,
                                     generator=generators[0])
        # The interface promises [0,1]; the search itself never clamps, and ARA (metrics.ara) measures the
        # unclamped delta, so an l2min x_adv clamped here may fall back to the true class (success says so).
        x_adv = (x + result.delta).clamp_(0.0, 1.0)[None]
        if not self.minimal:
            return x_adv, None
        distance = torch.where(result.met, rms(result.delta), torch.full((len(x),), math.inf, dtype=x.dtype, device=x.device))
        return x_adv, distance
