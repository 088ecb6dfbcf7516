"""Square Attack, L-inf (Andriushchenko et al. 2020): a score-based black-box random search (SPEC 5).

Follows the PyTorch port SPEC 5 vendored (advertorch PR 74, the same code as autoattack's and torchattacks.Square):
vertical-stripe initialisation x + eps * sign (one sign per channel and column), then `n_queries` proposals that
set a random s x s window of x_best to x0 +- 2 eps per channel (clipped back to the eps ball and the bounds), s from
the p schedule `p_selection`; a proposal is kept when it lowers the loss or misclassifies; a sample stops once it is
fooled. Returned as the original does: the adversarial where the attack succeeded, the clean input otherwise (also
for samples misclassified before any query, which are not attacked).

Batched differently from the port: each sample draws its own window and signs (the port draws one window for the
whole batch; the paper's numpy code draws one per sample). A sample's trajectory has the same distribution either
way, and here it does not depend on the other samples: every draw is made for the whole batch, so a sample sees
the same random numbers whether or not the others are still running.

Works in the attack's space (its bounds), on images (C, H, W) and on vectors (D,), which are searched as 1 x h x w
images, h the largest divisor of D not above sqrt(D) (SPEC 5 reshapes its 500-d spheres to 1 x 20 x 25).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from advpipe.attacks.base import Attack, AttackContext, check_int, check_positive, parse_eps, register
from advpipe.attacks.spaces import class_scores

SQUARE_LOSSES = ("margin", "ce")
# (iteration, active sample indices, proposals z_new (k, c, h, w), their margins, the margins before, accepted)
Trace = Callable[[int, Tensor, Tensor, Tensor, Tensor, Tensor], None]


def p_selection(p_init: float, it: int, n_queries: int) -> float:
    """The original's schedule of the window's area fraction p, halved at fixed points of a 10000-query run
    rescaled to `n_queries` (the port's resc_schedule=True)."""
    it = int(it / n_queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                       (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


def image_shape(sample_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(c, h, w) the search runs on: images as they are, a vector of D as 1 x h x (D / h), h the largest divisor
    of D that is <= sqrt(D) (500 -> 20 x 25), a 2-D sample (H, W) as 1 x H x W."""
    if len(sample_shape) == 3:
        return sample_shape  # type: ignore[return-value]
    if len(sample_shape) == 2:
        return (1, *sample_shape)
    if len(sample_shape) == 1:
        d = sample_shape[0]
        h = max(k for k in range(1, math.isqrt(d) + 1) if d % k == 0)
        return 1, h, d // h
    raise ValueError(f"square: samples must be vectors, (H, W) or (C, H, W) images, got shape {sample_shape}")


def margin_and_loss(scores: Tensor, classes: Tensor, loss: str, targeted: bool) -> tuple[Tensor, Tensor]:
    """(margin, loss) per sample, both minimised: margin = score of `classes` - best other (untargeted; <= 0 is a
    success), best other - target (targeted); loss = the margin, or -CE (untargeted) / CE to the target."""
    if scores.shape[1] == 1:  # a bare one-logit output d: class scores (-d, d), as SPEC 5 wraps binary models
        scores = torch.cat([-scores, scores], 1)
    real = scores.gather(1, classes[:, None]).squeeze(1)
    other = scores.scatter(1, classes[:, None], float("-inf")).amax(1)
    margin = other - real if targeted else real - other
    if loss == "margin":
        return margin, margin
    xent = F.cross_entropy(scores, classes, reduction="none")
    return margin, xent if targeted else -xent


def _signs(shape: tuple[int, ...], gen: torch.Generator | None, like: Tensor) -> Tensor:
    return torch.rand(shape, generator=gen, device=like.device).lt(0.5).to(like.dtype).mul_(2).sub_(1)


@torch.no_grad()
def square_linf(scores_fn: Callable[[Tensor], Tensor], z0: Tensor, classes: Tensor, eps: float,
                lo: Tensor | float, hi: Tensor | float, *, n_queries: int = 5000, p_init: float = 0.8,
                loss: str = "margin", targeted: bool = False, generator: torch.Generator | None = None,
                trace: Trace | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Square Attack on z0 (N, c, h, w) within eps (L-inf) and [lo, hi]; scores_fn(z) -> class scores (k, C).

    Returns (z_adv, success (N,), queries (N,) = the perturbed points each sample queried). `trace`, if given, is
    called after every iteration with (iteration, active indices, proposals, their margins, the margins before,
    accepted) so a test can follow the search.
    """
    n, c, h, w = z0.shape
    dev = z0.device
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    margin_clean, _ = margin_and_loss(scores_fn(z0), classes, loss, targeted)
    attack = margin_clean > 0  # the original attacks only what the model still gets right
    z_best = torch.clamp(z0 + eps * _signs((n, c, 1, w), generator, z0), lo, hi)  # vertical stripes
    margin_min, loss_min = margin_and_loss(scores_fn(z_best), classes, loss, targeted)
    queries = attack.to(torch.long)
    for it in range(n_queries):
        idx = (attack & (margin_min > 0)).nonzero().squeeze(1)
        if len(idx) == 0:
            break
        # s from the area fraction p of the window; at most the image's side (the port would index off the image)
        s = min(max(int(round(math.sqrt(p_selection(p_init, it, n_queries) * h * w))), 1), h, w)
        # Window corners floor((h - s) U) as the port draws them (h - s itself is never chosen), and one sign per
        # channel; drawn for every sample, used by the active ones.
        # (the sides as Python numbers: a torch.tensor of them would be a blocking host-to-device copy per query)
        u = torch.rand(2, n, generator=generator, device=dev)
        corner = torch.stack([u[0] * (h - s), u[1] * (w - s)]).long()[:, idx]
        signs = _signs((n, c, 1, 1), generator, z0)[idx]
        rows = (ar_h >= corner[0, :, None]) & (ar_h < corner[0, :, None] + s)
        cols = (ar_w >= corner[1, :, None]) & (ar_w < corner[1, :, None] + s)
        window = (rows[:, None, :, None] & cols[:, None, None, :]).to(z0.dtype)
        x, xb = z0[idx], z_best[idx]
        z_new = torch.clamp(torch.min(torch.max(xb + window * (2 * eps) * signs, x - eps), x + eps), lo, hi)
        margin, loss_new = margin_and_loss(scores_fn(z_new), classes[idx], loss, targeted)
        improved = loss_new < loss_min[idx]
        accepted = improved | (margin <= 0)
        before = margin_min[idx]
        loss_min[idx] = torch.where(improved, loss_new, loss_min[idx])
        margin_min[idx] = torch.where(accepted, margin, before)
        z_best[idx] = torch.where(accepted.view(-1, 1, 1, 1), z_new, xb)
        queries[idx] += 1
        if trace is not None:
            trace(it, idx, z_new, margin, before, accepted)
    success = attack & (margin_min <= 0)
    return torch.where(success.view(-1, 1, 1, 1), z_best, z0), success, queries


@register("square")
@dataclass(kw_only=True)
class Square(Attack):
    """Square Attack, L-inf, as an engine attack (module doc). eps: a number or a grid (each eps runs from the clean
    input with its own generator); n_queries: proposals after the initial point; p_init: the window's initial area
    fraction; loss: "margin" (class-score margin) or "ce". The margin is computed on the class scores (a one-logit
    binary model's (-d, d)). A zero budget returns the clean input."""

    eps: Any
    n_queries: int = 5000
    p_init: float = 0.8
    loss: str = "margin"

    def __post_init__(self) -> None:
        super().__post_init__()
        eps, grid = parse_eps(self.eps)
        self.eps = eps if grid else eps[0]
        check_int("n_queries", self.n_queries, 1)
        self.p_init = check_positive("p_init", self.p_init)
        if self.p_init > 1:
            raise ValueError(f"p_init: the window's area fraction must be <= 1, got {self.p_init!r}")
        if self.loss not in SQUARE_LOSSES:
            raise ValueError(f"loss: expected one of {list(SQUARE_LOSSES)}, got {self.loss!r}")
        if self.criterion_.kind == "btr":
            raise ValueError("square: criterion btr is not supported (the search stops on a misclassification)")

    def make_generators(self, device: torch.device) -> list[torch.Generator | None]:
        from advpipe.runtime import derive_seed  # one stream per eps: a grid point's draws do not depend on the grid
        return [torch.Generator(device=device).manual_seed(derive_seed(self.seed, eps)) for eps in self.eps_list]

    def attack_batch(self, ctx: AttackContext, z: Tensor, classes: Tensor,
                     generators: list[torch.Generator | None]) -> tuple[Tensor, None]:
        shape = z.shape
        img = image_shape(tuple(shape[1:]))
        lo, hi = (_bound(b, len(shape) == 4) for b in (ctx.space.lo, ctx.space.hi))

        def scores_fn(zi: Tensor) -> Tensor:
            return class_scores(ctx.model, ctx.space.raw(zi.reshape(len(zi), *shape[1:])))

        z_img = z.detach().reshape(len(z), *img)
        out = []
        for eps, gen in zip(self.eps_list, generators):
            if eps == 0:
                out.append(z.detach().clone())
                continue
            z_adv, _, _ = square_linf(scores_fn, z_img, classes, eps, lo, hi, n_queries=self.n_queries,
                                      p_init=self.p_init, loss=self.loss, targeted=self.criterion_.targeted,
                                      generator=gen)
            out.append(z_adv.reshape(shape))
        return torch.stack(out), None


def _bound(b: Tensor | float, image: bool) -> Tensor | float:
    """A space bound usable in the search's image layout: a scalar, or per-channel bounds for image inputs."""
    if isinstance(b, Tensor) and b.numel() == 1:
        return float(b)
    if isinstance(b, Tensor) and not image:
        raise ValueError("square: per-channel bounds need image inputs (C, H, W)")
    return b
