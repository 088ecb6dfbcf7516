"""Carlini-Wagner L2, batched, with cleverhans 3.1 semantics and defaults (SPEC 1 item 3)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from advpipe.attacks.base import (Attack, AttackContext, check_bool, check_int, check_positive, parse_eps,
                                  parse_fraction, register)

NO_UPPER = 1e10  # cleverhans' "no successful const yet" upper bound; < 1e9 means one was found


@register("cw")
@dataclass(kw_only=True)
class CarliniWagnerL2(Attack):
    """min |x'-x|_2^2 + c * max(Z_y - max_{j!=y} Z_j + confidence, 0), x' = (tanh(w)+1)/2, Adam on w (SPEC 1 item 3).

    Per-sample binary search on c (x10 until a first success, then bisection) and the smallest-L2 success kept;
    samples never fooled come back unchanged, at distance inf. A minimal attack: `eps` (an L2 budget or a grid;
    default none, i.e. unbounded) only says where it counts as a success. Pixel space, untargeted. Defaults are cleverhans 3.1 (TF CWL2). vrapi called
    cleverhans.torch's port, which differs: no abort-early and Adam/w carried over between binary-search steps;
    `abort_early=False, warm_start=True` reproduces it. The L2 is measured to x itself, as in the torch port (the TF
    version measured to x's tanh round trip, at most ~1e-6 per pixel away).
    """

    eps: Any = None
    learning_rate: float = 5e-3
    confidence: float = 0.0
    initial_const: float = 1e-2
    binary_search_steps: int = 5
    max_iterations: int = 1000
    abort_early: bool = True
    warm_start: bool = False

    @property
    def minimal(self) -> bool:
        return True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eps is not None:
            eps, grid = parse_eps(self.eps)
            self.eps = eps if grid else eps[0]
        if self.space != "pixels" or self.criterion_.kind != "misclassification":
            raise ValueError("cw: works in pixel space on the misclassification criterion (tanh box [0,1], untargeted)")
        self.learning_rate = check_positive("learning_rate", self.learning_rate)
        self.confidence = parse_fraction(self.confidence, "confidence")
        self.initial_const = check_positive("initial_const", self.initial_const)
        check_int("binary_search_steps", self.binary_search_steps, 1)
        check_int("max_iterations", self.max_iterations, 1)
        check_bool("abort_early", self.abort_early)
        check_bool("warm_start", self.warm_start)

    def attack_batch(self, ctx: AttackContext, x: Tensor, y: Tensor,
                     generators: list[torch.Generator | None]) -> tuple[Tensor, Tensor]:
        best_adv, best_l2 = self.perturb(ctx.model, x, y)
        return best_adv.expand(len(self.eps_list), *x.shape), best_l2.sqrt()

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(best adversarial (N, ...), its squared L2 distance (N,), inf where never fooled)."""
        n = x.shape[0]
        # tanh space; the 0.999999 (cleverhans) keeps atanh finite at pixels equal to 0 or 1.
        w0 = torch.atanh((x * 2 - 1) * 0.999999)
        const = torch.full((n,), self.initial_const, dtype=x.dtype, device=x.device)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, NO_UPPER)
        best_l2 = torch.full_like(const, float("inf"))
        best_adv = x.clone()
        modifier = optimizer = None
        for search in range(self.binary_search_steps):
            if not self.warm_start and self.binary_search_steps >= 10 and search == self.binary_search_steps - 1:
                const = upper.clone()  # TF cleverhans/Carlini "repeat" (not in the torch port): retry the upper bound
            if optimizer is None or not self.warm_start:
                modifier = torch.zeros_like(x, requires_grad=True)
                optimizer = torch.optim.Adam([modifier], lr=self.learning_rate)
            found_l2 = self._optimize(model, x, y, w0, const, modifier, optimizer, best_l2, best_adv)
            const, lower, upper = update_const(const, lower, upper, found_l2 < float("inf"))
        return best_adv, best_l2

    def _optimize(self, model: nn.Module, x: Tensor, y: Tensor, w0: Tensor, const: Tensor, modifier: Tensor,
                  optimizer: torch.optim.Optimizer, best_l2: Tensor, best_adv: Tensor) -> Tensor:
        """One binary-search step: Adam iterations at fixed const; updates best_l2/best_adv in place.

        Returns this step's smallest successful L2 per sample (inf where none). As in cleverhans, the loss,
        L2 and logits of an iteration are those of the point *before* that iteration's Adam update.
        """
        check_every = self.max_iterations // 10 or 1
        prev = 1e6  # cleverhans' initial "previous loss" for abort-early
        found_l2 = torch.full_like(best_l2, float("inf"))
        for it in range(self.max_iterations):
            new_x = (torch.tanh(modifier + w0) + 1) / 2
            logits = model(new_x)
            l2 = (new_x - x).pow(2).flatten(1).sum(1)
            loss = (const * cw_margin_loss(logits, y, self.confidence) + l2).sum()
            (modifier.grad,) = torch.autograd.grad(loss, modifier)  # input only: no grads land in the model
            optimizer.step()
            # Stop when the batch loss fell by < 0.01% since the last check; as in cleverhans, the iterate that
            # triggers the stop is not recorded.
            if self.abort_early and it % check_every == 0:
                current = loss.item()
                if current > prev * 0.9999:
                    break
                prev = current
            with torch.no_grad():
                success = fooled(logits, y, self.confidence)
                l2 = torch.where(success, l2, torch.full_like(l2, float("inf")))
                found_l2 = torch.minimum(found_l2, l2)
                better = l2 < best_l2
                best_l2.copy_(torch.where(better, l2, best_l2))
                best_adv.copy_(torch.where(better.view(-1, *[1] * (x.dim() - 1)), new_x, best_adv))
        return found_l2


def cw_margin_loss(logits: Tensor, y: Tensor, confidence: float) -> Tensor:
    """max(Z_y - max_{j!=y} Z_j + confidence, 0) per sample (untargeted C&W f6); the true class is masked by -1e4."""
    onehot = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, y[:, None], True)
    real = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(onehot, -1e4).amax(1)
    return (real - other + confidence).clamp(min=0)


def fooled(logits: Tensor, y: Tensor, confidence: float) -> Tensor:
    """cleverhans `compare`: argmax of the logits with confidence added to the true class differs from y."""
    if confidence:
        logits = logits.scatter_add(1, y[:, None], torch.full_like(logits[:, :1], confidence))
    return logits.argmax(1) != y


def update_const(const: Tensor, lower: Tensor, upper: Tensor, success: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Binary search on c: success -> upper = min(upper, c); failure -> lower = max(lower, c), and c *= 10 while
    no upper bound is known, else c = (lower + upper) / 2 (cleverhans)."""
    upper = torch.where(success, torch.minimum(upper, const), upper)
    lower = torch.where(success, lower, torch.maximum(lower, const))
    bisect = (lower + upper) / 2
    const = torch.where(upper < 1e9, bisect, torch.where(success, const, const * 10))
    return const, lower, upper
