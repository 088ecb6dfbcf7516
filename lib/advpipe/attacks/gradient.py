"""FGSM and BIM (cleverhans PGD, L-inf) as one sign-gradient routine, with 1/255 re-quantisation (SPEC 1, item 3)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advpipe.attacks.base import Attack, check_bool, check_int, parse_fraction, register

LEVELS = 255  # 8-bit images: the 1/255 grid the inputs were stored on


def sign_gradient_steps(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float, steps: int,
                        x_start: Tensor | None = None, clip_iterates: bool = True) -> Tensor:
    """x_{t+1} = clip_box(x_t + step_size * sign(grad_x CE(model(x_t), y))), box = [x-eps, x+eps] (∩ [0,1]).

    SPEC 1 item 3 (cleverhans fast_gradient_method / projected_gradient_descent, L-inf). Clamping to the
    intersection of the eps ball and [0,1] equals cleverhans' clip-to-ball-then-clip-to-[0,1] coordinate-wise.
    `x_start` (default: a copy of x) is updated in place. One forward and one backward per step.
    """
    lo, hi = x - eps, x + eps
    if clip_iterates:
        lo.clamp_(min=0.0)
        hi.clamp_(max=1.0)
    x_adv = x.clone() if x_start is None else x_start
    for _ in range(steps):
        x_adv.requires_grad_(True)
        # Summed, not averaged, CE: the sign is the same, and a per-sample gradient never underflows with batch size.
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)  # w.r.t. the input only: model grads never accumulate
        x_adv = x_adv.detach().add_(grad.sign_(), alpha=step_size).clamp_(lo, hi)  # graph is freed: in place is safe
    return x_adv.detach()


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


def finish(x_adv: Tensor, x: Tensor, eps: float, quantize: bool) -> Tensor:
    """Re-quantise to the 1/255 grid (inside the eps ball), or just clip to [0,1] (SPEC 1 item 3)."""
    return quantize_to_grid(x_adv, x, eps) if quantize else x_adv.clamp_(0.0, 1.0)


@register("fgsm")
@dataclass(kw_only=True)
class FGSM(Attack):
    """Fast gradient sign method: one L-inf step of size eps on the CE loss (SPEC 1 item 3)."""

    eps: float
    quantize: bool = True

    def __post_init__(self) -> None:
        self.eps = parse_fraction(self.eps, "eps")
        check_bool("quantize", self.quantize)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None) -> Tensor:
        x_adv = sign_gradient_steps(model, x, y, eps=self.eps, step_size=self.eps, steps=1)
        return finish(x_adv, x, self.eps, self.quantize)


@register("bim")
@dataclass(kw_only=True)
class BIM(Attack):
    """Basic iterative method = cleverhans PGD in L-inf: `steps` sign steps of `step_size` inside the eps ball.

    SPEC 1 item 3. `random_start` draws the start uniformly in the eps ball from a generator seeded by `seed`
    (Madry et al.); `clip_iterates=False` reproduces vrapi, which passed no clip_min/clip_max to cleverhans, so
    iterates may leave [0,1] (the gradient is taken there) until the final clip.
    """

    eps: float
    step_size: float
    steps: int
    random_start: bool = False
    seed: int = 0
    quantize: bool = True
    clip_iterates: bool = True

    def __post_init__(self) -> None:
        self.eps = parse_fraction(self.eps, "eps")
        self.step_size = parse_fraction(self.step_size, "step_size")
        check_int("steps", self.steps, 1)
        check_int("seed", self.seed, 0)
        for name in ("random_start", "quantize", "clip_iterates"):
            check_bool(name, getattr(self, name))

    def make_generator(self, device: torch.device) -> torch.Generator | None:
        return torch.Generator(device=device).manual_seed(self.seed) if self.random_start else None

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None) -> Tensor:
        x_start = None
        if self.random_start:
            noise = torch.empty_like(x).uniform_(-self.eps, self.eps, generator=generator)
            x_start = noise.add_(x)
            if self.clip_iterates:
                x_start.clamp_(0.0, 1.0)
        x_adv = sign_gradient_steps(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                                    x_start=x_start, clip_iterates=self.clip_iterates)
        return finish(x_adv, x, self.eps, self.quantize)
