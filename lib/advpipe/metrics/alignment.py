"""Gradient alignment metrics of SPEC 5 (ricbl/gradient-direction-of-robust-models, penalties.py and train.py).

- direction_gradient: the gradient whose direction is measured. Binary one-logit models: grad_x l_logit with
  l_logit = (1 - 2y) d, closest class 1 - y. Multi-class: the closest class of the paper's Eq. 5, c~ = argmin_{c != y}
  (f_y - f_c) / |grad f_y - grad f_c|_2 on the logits (the original's get_closest_class), and grad_x (f_c~ - f_y).
- cosine: the original's per-sample cosine with stabilize_variable (every element moved 1e-15 away from 0).
- alpha_dx = cos(grad, dx), alpha_x = |cos(x, grad)| (x in the dataset's natural units), similarity(dx, dx_hat).
- alignment_table: the per-example table (one row per sample).

Gradients are taken w.r.t. the pixels [0,1] by default. A dataset's natural input is lo + (hi - lo) * pixels, so the
natural gradient is the pixel gradient / (hi - lo): the same direction, and every cosine here is unchanged. alpha_x
is the exception that needs x itself in natural units (it is not shift invariant), not the gradient.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from advpipe.attacks.losses import one_logit
from advpipe.attacks.spaces import class_scores, make_space

if TYPE_CHECKING:
    import pandas as pd

STABILIZER = 1e-15  # penalties.stabilize_variable


def _flat(v: Tensor) -> Tensor:
    return v.reshape(len(v), -1)


def stabilize(v: Tensor) -> Tensor:
    """v + sign(v) * 1e-15 elementwise, sign 0 counted as +1 (the original's stabilize_variable): a zero vector
    gets a finite cosine instead of 0/0."""
    sign = torch.sign(v.detach())
    return v + torch.where(sign == 0, torch.ones_like(sign), sign) * STABILIZER


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample cosine of a and b (N, ...), each flattened, both stabilised first; differentiable."""
    a, b = _flat(stabilize(a)), _flat(stabilize(b))
    return (a * b).sum(1) / torch.linalg.vector_norm(a, dim=1) / torch.linalg.vector_norm(b, dim=1)


def pick_class(v: Tensor, classes: Tensor) -> Tensor:
    """Row classes[i] of v[i] for per-class tensors v (N, C, ...)."""
    return v[torch.arange(len(v), device=v.device), classes.to(v.device)]


def alpha_dx(grad: Tensor, dx: Tensor, closest: Tensor | None = None) -> Tensor:
    """cos(grad, dx) per sample (SPEC 5's alpha_dx). dx (N, ...), or per-class directions (N, C, ...) of which the
    closest class's row is taken (the indirect method's dx_all[i, c~])."""
    if dx.dim() == grad.dim() + 1:
        if closest is None:
            raise ValueError("alpha_dx: per-class directions (N, C, ...) need the closest class of each sample")
        dx = pick_class(dx, closest)
    return cosine(grad, dx.to(grad.dtype))


def alpha_x(grad: Tensor, x_natural: Tensor) -> Tensor:
    """|cos(x, grad)| per sample (SPEC 5's alpha_x, the literature's baseline). x in natural units, the original's
    network input (e.g. [-1, 1] for MNIST): the cosine with x changes when x is shifted."""
    return cosine(x_natural.to(grad.dtype), grad).abs()


def similarity(dx: Tensor, dx_hat: Tensor) -> Tensor:
    """sim(dx, dx_hat) = cos(dx, dx_hat) per sample: how well an estimator recovers the true direction."""
    return cosine(dx, dx_hat.to(dx.dtype))


def class_jacobian(scores: Tensor, z: Tensor, create_graph: bool = False) -> Tensor:
    """d scores[:, c] / d z for every class c: (N, C, ...), one backward pass per class over the whole batch (the
    original's calculate_jacobian). Samples are independent for a model in eval mode (or with frozen norm layers)."""
    rows = [torch.autograd.grad(scores[:, c].sum(), z, retain_graph=True, create_graph=create_graph)[0]
            for c in range(scores.shape[1])]
    return torch.stack(rows, 1)


def closest_class(scores: Tensor, jac: Tensor, y: Tensor) -> Tensor:
    """Eq. 5: argmin_{c != y} (f_y - f_c) / |grad f_y - grad f_c|_2 on the logits, as get_closest_class computes it
    (no epsilon; the label's own entry set to inf; ties to the lowest class)."""
    with torch.no_grad():
        diff = scores.gather(1, y[:, None]) - scores
        gdiff = pick_class(jac, y).unsqueeze(1) - jac
        dist = diff / torch.linalg.vector_norm(gdiff.flatten(2), dim=2)
        dist.scatter_(1, y[:, None], float("inf"))
        return dist.argmin(1)


def direction_gradient(model: nn.Module, x: Tensor, y: Tensor, *, create_graph: bool = False,
                       space: Any = None) -> tuple[Tensor, Tensor]:
    """(grad (N, ...), closest (N,)) for x in pixels [0,1] (or in `space`, e.g. [lo, hi] natural bounds, where
    the gradient is then taken), labels y.

    Binary models, raw output of one logit d (or two, d = f_1 - f_0): grad = grad_x (1 - 2y) d, closest = 1 - y.
    Multi-class: closest = c~ of Eq. 5, grad = grad_x (f_c~ - f_y), from the C per-class gradients (C backward
    passes over the batch). create_graph keeps the graph (the alignment penalty differentiates the cosine).
    Each sample's gradient is its own: the batch sum is differentiated, so keep norm layers in eval mode.
    """
    sp = make_space("pixels" if space is None else space, model)
    z = x.detach().requires_grad_(True)
    y = y.to(x.device)
    with torch.enable_grad():
        raw = sp.raw(z)
        if _flat(raw).shape[1] <= 2:
            (grad,) = torch.autograd.grad(one_logit(raw, y).sum(), z, create_graph=create_graph)
            return grad, 1 - y
        scores = class_scores(model, raw)
        jac = class_jacobian(scores, z, create_graph)
    near = closest_class(scores.detach(), jac.detach(), y)
    return pick_class(jac, near) - pick_class(jac, y), near


TABLE_COLUMNS = ("index", "label", "pred", "correct", "closest", "alpha_dx", "alpha_x")


def alignment_table(*, index: Any, label: Any, pred: Any, closest: Any, alpha_x: Any, alpha_dx: Any = None,
                    alpha_dx_all: Any = None, extra: dict[str, Any] | None = None) -> "pd.DataFrame":
    """The per-example table (one row per sample, the original's per-example alignment): index, label, pred,
    correct (pred == label), closest (c~, or 1 - y for binary models), alpha_dx (NaN without a direction), alpha_x;
    with alpha_dx_all (N, C), the alignment towards every class c as alpha_dx_c<c> (NaN at the label); `extra`:
    further per-sample columns. Arrays or tensors of length N."""
    import numpy as np
    import pandas as pd

    def arr(v: Any) -> np.ndarray:
        return np.asarray(v.detach().cpu().numpy() if isinstance(v, Tensor) else v)

    label, pred = arr(label).astype(np.int64), arr(pred).astype(np.int64)
    n = len(label)
    table = pd.DataFrame({"index": arr(index).astype(np.int64), "label": label, "pred": pred,
                          "correct": pred == label, "closest": arr(closest).astype(np.int64),
                          "alpha_dx": np.full(n, np.nan) if alpha_dx is None else arr(alpha_dx).astype(np.float64),
                          "alpha_x": arr(alpha_x).astype(np.float64)}, columns=list(TABLE_COLUMNS))
    if alpha_dx_all is not None:
        per_class = arr(alpha_dx_all).astype(np.float64).copy()
        per_class[np.arange(n), label] = np.nan
        for c in range(per_class.shape[1]):
            table[f"alpha_dx_c{c}"] = per_class[:, c]
    for name, values in (extra or {}).items():
        table[name] = arr(values)
    return table


def class_alignments(model: nn.Module, x: Tensor, y: Tensor, dx_all: Tensor, *, space: Any = None) -> Tensor:
    """cos(grad_x (f_c - f_y), dx_all[:, c]) for every class c: (N, C), NaN at c = y (multi-class models; the
    per-class columns of alignment_table)."""
    sp = make_space("pixels" if space is None else space, model)
    z = x.detach().requires_grad_(True)
    y = y.to(x.device)
    with torch.enable_grad():
        jac = class_jacobian(class_scores(model, sp.raw(z)), z)
    grads = jac - pick_class(jac, y).unsqueeze(1)
    n, c = grads.shape[:2]
    cos = cosine(grads.flatten(0, 1), dx_all.to(grads.device, grads.dtype).flatten(0, 1)).view(n, c)
    return cos.scatter(1, y[:, None], float("nan"))

