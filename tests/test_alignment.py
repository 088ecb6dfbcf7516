"""SPEC 5 alignment metrics (advpipe.metrics.alignment): cosine, alpha_dx, alpha_x, the closest class of Eq. 5."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advpipe.metrics.alignment import (alignment_table, alpha_dx, alpha_x, class_alignments, cosine,
                                       direction_gradient, similarity)


class Radial(nn.Module):
    """d = (|x| - 1.15) k on natural inputs [-1, 1] (x = 2p - 1 from pixels p): the ideal sphere classifier."""

    def normalize(self, x):
        return 2 * x - 1

    def forward_normalized(self, z):
        return (torch.linalg.vector_norm(z, dim=1, keepdim=True) - 1.15) * 3

    def forward(self, x):
        return self.forward_normalized(self.normalize(x))


class MLP(nn.Module):
    """A small float64 network on vectors of 6 pixels: 4 logits, or one (binary)."""

    def __init__(self, outputs=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, outputs)).double()

    def normalize(self, x):
        return (x - 0.3) / 0.7

    def forward_normalized(self, z):
        return self.net(z)

    def forward(self, x):
        return self.net(self.normalize(x))


def spheres(n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    g = torch.randn(n, 500, generator=gen)
    x_nat = g / g.norm(dim=1, keepdim=True) * (1 + 0.3 * y[:, None])
    return (x_nat + 1) / 2, x_nat, y


def data(n=40, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 6, generator=gen, dtype=torch.float64), torch.randint(0, 4, (n,), generator=gen)


def test_cosine_of_plus_and_minus_x_with_x():
    x = torch.randn(5, 3, 4)
    assert torch.allclose(cosine(x, x), torch.ones(5)) and torch.allclose(cosine(-x, x), -torch.ones(5))
    assert torch.allclose(alpha_dx(x, x), torch.ones(5)) and torch.allclose(alpha_dx(-x, x), -torch.ones(5))
    assert torch.allclose(alpha_x(-x, x), torch.ones(5)) and torch.allclose(similarity(x, 2 * x), torch.ones(5))


def test_cosine_of_zero_is_finite_as_the_originals():
    # stabilize_variable moves zeros to +1e-15: cos(0, 0) = 1, cos(0, v) = cos(1, v)
    zero, v = torch.zeros(2, 4, dtype=torch.float64), torch.tensor([[1.0, -2, 3, 0], [0, 0, 0, 0]]).double()
    assert torch.allclose(cosine(zero, zero), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(cosine(zero, v), cosine(torch.ones_like(v), v))
    assert torch.isfinite(cosine(zero, v)).all()


def test_radial_model_is_perfectly_aligned_on_spheres():
    x, x_nat, y = spheres()
    grad, closest = direction_gradient(Radial(), x, y)
    assert torch.equal(closest, 1 - y)
    dx = (1 - 2 * y[:, None]).float() * x_nat  # outward for r = 1, inward for r = 1.3
    assert torch.allclose(alpha_dx(grad, dx), torch.ones(len(y)), atol=1e-5)
    assert torch.allclose(alpha_x(grad, x_nat), torch.ones(len(y)), atol=1e-5)
    assert torch.allclose(alpha_dx(grad, -dx), -torch.ones(len(y)), atol=1e-5)


def test_gradient_in_another_space_is_the_pixel_gradient_rescaled():
    x, _, y = spheres(8)
    grad, _ = direction_gradient(Radial(), x, y)
    grad_nat, _ = direction_gradient(Radial(), 2 * x - 1, y, space=[-1, 1])
    assert torch.allclose(grad_nat, grad / 2)  # d/d(natural) = d/d(pixels) / (hi - lo): same direction


def finite_difference(f, x, h=1e-6):
    """Central differences of the per-sample scalar f (N,) along every input coordinate: (N, D)."""
    cols = []
    for k in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, k] = h
        cols.append((f(x + e) - f(x - e)) / (2 * h))
    return torch.stack(cols, 1)


def test_binary_gradient_matches_finite_differences():
    model = MLP(outputs=1)
    x, y = data()
    y = y % 2
    grad, closest = direction_gradient(model, x, y)
    with torch.no_grad():
        fd = finite_difference(lambda v: (1 - 2 * y) * model(v)[:, 0], x)
    assert torch.allclose(grad, fd, atol=1e-8) and torch.equal(closest, 1 - y)


def test_multiclass_gradient_matches_finite_differences():
    model = MLP()
    x, y = data()
    grad, near = direction_gradient(model, x, y)
    rows = torch.arange(len(x))
    with torch.no_grad():
        fd = finite_difference(lambda v: model(v)[rows, near] - model(v)[rows, y], x)
    assert torch.allclose(grad, fd, atol=1e-8)


def test_closest_class_and_gradient_match_a_per_sample_loop():
    model = MLP()
    x, y = data()
    grad, near = direction_gradient(model, x, y)
    assert (near != y).all()
    for i in range(len(x)):
        xi = x[i]
        f = model(xi[None])[0].detach()
        jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], xi)  # (C, D)
        dist = [((f[y[i]] - f[c]) / (jac[y[i]] - jac[c]).norm()).item() if c != y[i] else np.inf for c in range(4)]
        assert near[i] == int(np.argmin(dist))
        xg = xi[None].clone().requires_grad_(True)
        out = model(xg)[0]
        (g,) = torch.autograd.grad(out[near[i]] - out[y[i]], xg)
        assert torch.allclose(grad[i], g[0], atol=1e-12)


def test_two_logits_give_the_multiclass_answer():
    model = MLP(outputs=2)
    x, y = data()
    y = y % 2
    grad, closest = direction_gradient(model, x, y)
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    rows = torch.arange(len(x))
    (g,) = torch.autograd.grad((out[rows, 1 - y] - out[rows, y]).sum(), xg)
    assert torch.equal(closest, 1 - y) and torch.allclose(grad, g)


def test_create_graph_lets_the_penalty_reach_the_weights():
    model = MLP()
    x, y = data()
    grad, _ = direction_gradient(model, x, y, create_graph=True)
    dx = torch.randn_like(x)
    weights = list(model.parameters())
    grads = torch.autograd.grad(cosine(grad, dx).mean(), weights, allow_unused=True)  # the last bias: no part
    grads = [g for g in grads if g is not None]
    assert len(grads) == 3 and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_alpha_dx_picks_the_closest_class_row():
    model = MLP()
    x, y = data()
    grad, near = direction_gradient(model, x, y)
    dx_all = torch.randn(len(x), 4, 6, dtype=torch.float64)
    got = alpha_dx(grad, dx_all, near)
    expected = torch.stack([cosine(grad[i:i + 1], dx_all[i:i + 1, near[i]])[0] for i in range(len(x))])
    assert torch.allclose(got, expected)
    with pytest.raises(ValueError, match="closest"):
        alpha_dx(grad, dx_all)
    per_class = class_alignments(model, x, y, dx_all)
    assert torch.isnan(per_class[torch.arange(len(x)), y]).all()
    assert torch.allclose(per_class[torch.arange(len(x)), near], got)


def test_alignment_table_columns():
    model = MLP()
    x, y = data(6)
    grad, near = direction_gradient(model, x, y)
    with torch.no_grad():
        pred = model(x).argmax(1)
    dx_all = torch.randn(6, 4, 6, dtype=torch.float64)
    table = alignment_table(index=np.arange(10, 16), label=y, pred=pred, closest=near,
                            alpha_x=alpha_x(grad, x), alpha_dx=alpha_dx(grad, dx_all, near),
                            alpha_dx_all=class_alignments(model, x, y, dx_all))
    assert list(table.columns[:7]) == ["index", "label", "pred", "correct", "closest", "alpha_dx", "alpha_x"]
    assert list(table.columns[7:]) == [f"alpha_dx_c{c}" for c in range(4)]
    assert (table["correct"] == (pred == y).numpy()).all() and table["index"].tolist() == list(range(10, 16))
    assert np.allclose(table["alpha_dx"], [table[f"alpha_dx_c{c}"][i] for i, c in enumerate(near.tolist())])
    bare = alignment_table(index=[0], label=[1], pred=[1], closest=[0], alpha_x=[0.5])
    assert np.isnan(bare["alpha_dx"][0]) and bool(bare["correct"][0])
