"""Fixed-budget gradient attacks of the engine: FGSM, BIM and PGD in L-inf, L2 and RMS, over an eps grid.

One routine (`GradientAttack.attack_batch`): an optional random start in the ball, `steps` steps along the sign
(L-inf) or the unit-L2 direction (L2, RMS) of the input gradient of a loss hook, each followed by the projection
onto the eps ball and the clamp policy; re-quantisation to the 1/255 grid at the end (SPEC 1 item 3). FGSM, BIM
and PGD are its presets. SPEC 3's attacks are configurations: the normalised space, the "model" loss, per-image
(FGSM) or no (BIM) clamp, accumulated BIM gradients, and torchattacks' [0,1] clamp with soft-target CE (PGD).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from advpipe.attacks.base import Attack, AttackContext, check_bool, check_int, parse_eps, parse_fraction, register
from advpipe.attacks.losses import check_loss, make_loss

LEVELS = 255  # 8-bit images: the 1/255 grid the inputs were stored on
NORMS = ("linf", "l2", "rms")
PROJECTIONS = ("delta", "clip")
CLAMPS = ("box", "per_image", "none")


def quantize_to_grid(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """round(x_adv*255)/255 clamped to [ceil((x-eps)*255)/255, floor((x+eps)*255)/255] ∩ [0,1] (SPEC 1 item 3)."""
    # vrapi only rounds and clips to [0,1]. On its on-grid images with eps = 3/255 that never leaves the eps ball,
    # but an input that is not on the grid (or an eps that is not a multiple of 1/255) would be moved by up to half
    # a step (0.5/255) beyond eps. Clamping to the grid points that lie inside the ball keeps both properties.
    tol = 1e-4  # in grid steps: absorbs the float32 rounding of (x +- eps) * 255 when x and eps sit on the grid
    lo = ((x - eps) * LEVELS - tol).ceil_().clamp_(min=0)
    hi = ((x + eps) * LEVELS + tol).floor_().clamp_(max=LEVELS)
    q = (x_adv * LEVELS).round_().clamp_(lo, hi).div_(LEVELS)
    # No grid point within eps of x (eps < 1/255 and x off the grid): keep the unrounded value, the budget wins.
    return torch.where(lo <= hi, q, x_adv.clamp(0.0, 1.0))


def _per_sample(v: Tensor) -> tuple[int, ...]:
    return (-1,) + (1,) * (v.dim() - 1)


def l2_norm(v: Tensor) -> Tensor:
    """Per-sample L2 norm, shaped to broadcast against v."""
    return torch.linalg.vector_norm(v.flatten(1), dim=1).view(_per_sample(v))


def check_clamp(v: Any) -> str | tuple[float, float]:
    if isinstance(v, str) and v in CLAMPS:
        return v
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                           for b in v) and v[0] < v[1]:
        return float(v[0]), float(v[1])
    raise ValueError(f"clamp: expected 'box', 'per_image', 'none' or a range [lo, hi] with lo < hi, got {v!r}")


@dataclass(kw_only=True)
class GradientAttack(Attack):
    """x_{t+1} = clamp(project_eps(x_t -+ alpha * dir(grad_x loss(x_t, c)))); "-" for targeted criteria.

    eps: a number or a grid. norm: linf (dir = sign), l2 (dir = g / |g|_2, ball projection delta * min(1,
    eps/|delta|_2), random start uniform in the ball), rms (L2 with eps and alpha in RMS units, i.e. times
    sqrt(#elements)). step_size: alpha (None: eps / steps). projection (L-inf): "delta" = x0 + clip(x - x0, -eps,
    eps), foolbox/cleverhans/torchattacks' operation order; "clip" = clip(x, x0 - eps, x0 + eps), the same set
    rounded otherwise. clamp (the iterates and the random start): "box" = the space's image of [0,1],
    "per_image" = [min, max] of each clean input (SPEC 3 FGSM), "none", or [lo, hi] in the space (cdu890's
    torchattacks PGD clamps normalised inputs to [0, 1]). In pixel space the result is always clipped to [0,1]
    (the Classifier interface), or re-quantised to the 1/255 grid inside the ball (`quantize`; default on for
    FGSM and BIM in pixel space, SPEC 1).
    accumulate_gradients: step along the sum of all gradients so far (SPEC 3's never-zeroed BIM).
    A zero budget returns the clean input unattacked (SPEC 3: eps 0 is not attacked).
    """

    eps: Any
    norm: str = "linf"
    steps: int = 10
    step_size: Any = None
    random_start: bool = False
    loss: str = "ce"
    accumulate_gradients: bool = False
    projection: str = "delta"
    clamp: Any = "box"
    quantize: bool | None = None  # None: re-quantise FGSM and BIM in pixel space (SPEC 1), nothing else
    # The most inputs (eps x images) one fused pass over the grid holds; 0: one eps a pass. On CPU, passes of about
    # 1000 small inputs ran 1.25-1.6x faster than one eps a pass, and passes of 5000-10000 up to 2.5x slower (cache):
    # bench/bench_engine.py. A GPU takes far more; raise it there.
    grid_batch: int = 1024

    quantize_by_default = False

    def __post_init__(self) -> None:
        super().__post_init__()
        eps, grid = parse_eps(self.eps)
        self.eps = eps if grid else eps[0]
        if self.norm not in NORMS:
            raise ValueError(f"norm: expected one of {list(NORMS)}, got {self.norm!r}")
        check_int("steps", self.steps, 1)
        if self.step_size is not None:
            self.step_size = parse_fraction(self.step_size, "step_size")
        if self.quantize is None:
            self.quantize = self.quantize_by_default and self.space == "pixels"
        for name in ("random_start", "accumulate_gradients", "quantize"):
            check_bool(name, getattr(self, name))
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection: expected one of {list(PROJECTIONS)}, got {self.projection!r}")
        self.clamp = check_clamp(self.clamp)
        if self.quantize and self.space != "pixels":
            raise ValueError(f"quantize: the 1/255 grid is a pixel grid; the attack's space is {self.space!r}")
        check_loss(self.loss)
        check_int("grid_batch", self.grid_batch, 0)

    def make_generators(self, device: torch.device) -> list[torch.Generator | None]:
        if not self.random_start:
            return super().make_generators(device)
        from advpipe.runtime import derive_seed  # one stream per eps: a grid point's draws do not depend on the grid
        return [torch.Generator(device=device).manual_seed(derive_seed(self.seed, eps)) for eps in self.eps_list]

    def attack_batch(self, ctx: AttackContext, z: Tensor, classes: Tensor,
                     generators: list[torch.Generator | None]) -> tuple[Tensor, None]:
        loss_fn = make_loss(self.loss, ctx.model)
        lo, hi = self._clamp_range(ctx, z)
        out: list[Tensor | None] = [z.clone() if eps == 0 else None for eps in self.eps_list]  # eps 0: unattacked
        for group in self.fused_groups(len(z)):
            fused = self._attack_fused(ctx, z, classes, group, generators, loss_fn, lo, hi)
            for k, z_k in zip(group, fused.split(len(z))):
                out[k] = z_k
        return torch.stack(out), None

    def fused_groups(self, batch: int) -> list[list[int]]:
        """The grid's nonzero eps (indices), in passes of at most `grid_batch` inputs each (at least one eps a pass):
        the K eps of a grid run as one batched pass over (K x B) inputs where the budget allows, not K passes,
        since each step's cost on small models is mostly per-call overhead, not per-sample work."""
        active = [k for k, eps in enumerate(self.eps_list) if eps != 0]
        size = self.eps_per_pass(batch)
        return [active[i:i + size] for i in range(0, len(active), size)]

    def eps_per_pass(self, batch: int) -> int:
        return max(1, self.grid_batch // max(batch, 1))

    def _clamp_range(self, ctx: AttackContext, z: Tensor) -> tuple[Tensor | float | None, Tensor | float | None]:
        if self.clamp == "box":
            return ctx.space.lo, ctx.space.hi
        if self.clamp == "per_image":
            flat = z.flatten(1)
            return flat.min(1).values.view(_per_sample(z)), flat.max(1).values.view(_per_sample(z))
        if self.clamp == "none":
            return None, None
        return self.clamp

    def _attack_fused(self, ctx: AttackContext, z0: Tensor, classes: Tensor, group: list[int],
                      generators: list[torch.Generator | None], loss_fn, lo, hi) -> Tensor:
        """The attack at the eps of `group` at once: z0 repeated per eps, each copy with its own budget and step
        and its own eps's random start (the same draws as a pass of its own), so a grid point does not depend on
        the grid around it. Returns (G * B, ...) in group order."""
        n_rep = len(group)
        scale = math.sqrt(z0[0].numel()) if self.norm == "rms" else 1.0  # RMS budgets as L2 budgets
        eps = [self.eps_list[k] for k in group]
        alpha = [e / self.steps if self.step_size is None else self.step_size for e in eps]
        # One step of exactly eps from the clean input cannot leave the L-inf ball (FGSM): no projection, whose
        # rounding would only move the result off the original's.
        project = not (self.norm == "linf" and self.steps == 1 and not self.random_start
                       and all(a == e for a, e in zip(alpha, eps)))
        sign = -1.0 if self.criterion_.targeted else 1.0
        per_sample = _per_sample(z0)

        def column(values: list[float]) -> Tensor:  # one value per fused input, broadcast over its features
            # filled on the device: torch.tensor(values, device=...) would be a blocking host copy every batch
            return torch.cat([torch.full((len(z0),), v, dtype=z0.dtype, device=z0.device) for v in values]
                             ).view(per_sample)
        eps_n = column([e * scale for e in eps])
        step = column([sign * a * scale for a in alpha])
        zz0 = z0.repeat(n_rep, *[1] * (z0.dim() - 1))
        classes = classes.repeat(n_rep)
        if self.clamp == "per_image":  # per-image bounds follow their image; the others broadcast
            lo, hi = lo.repeat(n_rep, *[1] * (z0.dim() - 1)), hi.repeat(n_rep, *[1] * (z0.dim() - 1))
        z = zz0
        if self.random_start:
            z = zz0 + torch.cat([self._random_delta(z0, e * scale, generators[k]) for k, e in zip(group, eps)])
            z = self._clamp(z, lo, hi)
        g_sum = None
        for _ in range(self.steps):
            grad = ctx.input_gradient(z, classes, loss_fn)
            if self.accumulate_gradients:
                grad = grad if g_sum is None else g_sum + grad
                g_sum = grad
            if self.norm == "linf":
                z = z + step * grad.sign()
            else:
                z = z + step * grad / l2_norm(grad).clamp(min=1e-12)
            if project:
                z = self._project(z, zz0, eps_n)
            z = self._clamp(z, lo, hi)
        z = z.detach()
        if ctx.space.name == "pixels":
            z = quantize_to_grid(z, zz0, column(eps)) if self.quantize else z.clamp(0.0, 1.0)
        return z

    def _random_delta(self, z0: Tensor, eps: float, gen: torch.Generator | None) -> Tensor:
        if self.norm == "linf":
            return torch.empty_like(z0).uniform_(-eps, eps, generator=gen)
        # Uniform in the L2 ball: a uniform direction times eps * U^(1/d).
        direction = torch.empty_like(z0).normal_(generator=gen)
        direction = direction / l2_norm(direction).clamp(min=1e-12)
        u = torch.empty(len(z0), dtype=z0.dtype, device=z0.device).uniform_(generator=gen)
        return direction * (eps * u.pow(1.0 / z0[0].numel())).view(_per_sample(z0))

    def _project(self, z: Tensor, z0: Tensor, eps: Tensor | float) -> Tensor:
        if self.norm == "linf":
            if self.projection == "clip":
                return torch.clamp(z, z0 - eps, z0 + eps)
            return z0 + torch.clamp(z - z0, -eps, eps)
        delta = z - z0
        factor = (eps / l2_norm(delta).clamp(min=1e-12)).clamp(max=1.0)
        return z0 + delta * factor

    @staticmethod
    def _clamp(z: Tensor, lo, hi) -> Tensor:
        return z if lo is None else torch.clamp(z, lo, hi)


@register("pgd")
@dataclass(kw_only=True)
class PGD(GradientAttack):
    """Projected gradient descent (Madry et al.): random start in the ball, then `steps` projected steps."""

    random_start: bool = True


@register("bim")
@dataclass(kw_only=True)
class BIM(GradientAttack):
    """Basic iterative method = cleverhans PGD without random start; re-quantised to the 1/255 grid by default
    (SPEC 1 item 3). vrapi's call passed no clip range, so its iterates may leave [0,1]: `clamp: none`."""

    quantize_by_default = True


@register("fgsm")
@dataclass(kw_only=True)
class FGSM(GradientAttack):
    """Fast gradient sign method: one L-inf step of size eps (SPEC 1 item 3; SPEC 3 with clamp per_image)."""

    steps: int = 1
    quantize_by_default = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps != 1 or self.step_size is not None or self.random_start:
            raise ValueError("fgsm: one step of size eps without random start (use method bim or pgd for more)")
