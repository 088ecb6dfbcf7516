"""SPEC 5's cosine alignment penalty L_alpha as a training objective:
L = L_task - lambda * mean_batch cos(g, dx), differentiated through g (double backprop).

Source: ricbl/gradient-direction-of-robust-models, src/direct_method/train.py RobustTraining.train_fn (binary),
src/indirect_method/train.py RobustTraining.get_penalty_loss (multi-class), penalties.get_cosine_similarity.

- Binary, one-logit models (direct method): g = grad_x of the batch-mean symmetric BCE (one forward pass, the
  same one the task loss comes from); dx = extras["dx"], the ground-truth or generator direction.
- Multi-class (indirect method): task loss CE; g = grad_x (f_c~ - f_y) with c~ the closest class of the paper's
  Eq. 5 (advpipe.metrics.alignment.direction_gradient); dx = extras["dx_all"][i, c~], the estimated direction of
  sample i toward each class (N, C, ...).
- cos is the stabilised per-sample cosine (advpipe.metrics.alignment.cosine, the original's +-1e-15); dx is a
  constant (detached). Its scale does not matter: dx may be in natural units while g is w.r.t. pixels.

With attack training, the objective sees the adversarial batch and takes the gradient there, as the original does
(both flags may be on); dx stays the clean sample's (the original recomputes it at x_adv; it differs by O(eps)).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from advpipe.models.base import Classifier
from advpipe.train.loop import task_loss


@contextmanager
def kept_norm_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics as they were before the block: a second forward pass of the same batch (the
    direction gradient's) must not update them again; the batch statistics it normalises with are unchanged."""
    saved = [(buf, buf.detach().clone()) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
             for buf in m.buffers(recurse=False)]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


class CosineAlignment:
    """objective(model, x, y, extras) -> L_task - lambda_penalty * mean_batch cos(g, dx) (module doc)."""

    uses_extras = True

    def __init__(self, *, lambda_penalty: float = 0.1):
        self.lambda_penalty = float(lambda_penalty)
        self._sums: torch.Tensor | None = None  # (task loss * n, sum of cosines, n) since the last epoch_log

    def gradient_and_direction(self, model: Classifier, x: torch.Tensor, y: torch.Tensor,
                               extras: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(task loss, g with its graph, dx) for a batch; x must require grad."""
        from advpipe.metrics.alignment import direction_gradient, pick_class  # lazy: plain training needs none

        task = task_loss(model, x, y)
        if getattr(model, "one_logit", False):
            (grad,) = torch.autograd.grad(task, x, create_graph=True)
            return task, grad, _extra(extras, "dx", "binary")
        with kept_norm_stats(model):
            grad, closest = direction_gradient(model, x, y, create_graph=True)
        return task, grad, pick_class(_extra(extras, "dx_all", "multi-class"), closest)

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor,
                 extras: Mapping[str, torch.Tensor]) -> torch.Tensor:
        from advpipe.metrics.alignment import cosine

        x = x.detach().requires_grad_()  # the caller's tensor is left alone
        task, grad, dx = self.gradient_and_direction(model, x, y, extras)
        cos = cosine(grad, dx.detach().to(grad.dtype))
        sums = torch.stack([task.detach() * len(x), cos.detach().sum(),
                            torch.full((), float(len(x)), dtype=task.dtype, device=task.device)]).double()
        # a resumed state's sums arrive on the CPU: moved once, not each batch's sums to the CPU (a sync per batch)
        self._sums = sums if self._sums is None else self._sums.to(sums.device) + sums
        return task - self.lambda_penalty * cos.mean()

    def epoch_log(self) -> dict[str, float]:
        """Mean task loss and mean cosine cos(g, dx) over the epoch's training samples."""
        if self._sums is None:
            return {"task_loss": float("nan"), "cosine": float("nan")}
        task, cos, n = self._sums.tolist()
        self._sums = None
        return {"task_loss": task / n, "cosine": cos / n}

    def training_state(self) -> dict[str, Any]:
        """All mutable state for resuming (advpipe.train.resume): the epoch's sums (None between epochs)."""
        return {"sums": None if self._sums is None else self._sums.detach().cpu().tolist()}

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        sums = state.get("sums")
        self._sums = None if sums is None else torch.tensor(sums, dtype=torch.float64)


def _extra(extras: Mapping[str, torch.Tensor], key: str, kind: str) -> torch.Tensor:
    if key not in extras:
        raise KeyError(f"cosine_penalty on a {kind} model needs the per-sample extra {key!r}; got {sorted(extras)}")
    return extras[key]
