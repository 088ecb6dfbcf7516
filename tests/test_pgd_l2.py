"""PGD-L2 (advpipe.attacks.gradient) as SPEC 5 runs it: every iterate in the eps ball and the bounds, also in the
[-1, 1] space, and a random start uniform in the L2 ball (radius eps U^(1/d), uniform direction)."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import nn

from advpipe.attacks import build_attack


class Recorded(nn.Module):
    """A small MLP on pixel vectors (normalisation: the identity) that keeps every input it is shown."""

    def __init__(self, dim, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, 3))
        self.seen = []
        self.net.register_forward_hook(lambda m, inputs, out: self.seen.append(inputs[0].detach().clone()))

    def normalize(self, x):
        return x

    def forward_normalized(self, z):
        return self.net(z)

    def forward(self, x):
        return self.net(x)


def batch(n, dim, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, dim, generator=gen), torch.randint(0, 3, (n,), generator=gen)


@pytest.mark.parametrize("space, to_space", [("pixels", lambda x: x), ([-1, 1], lambda x: 2 * x - 1)])
def test_every_iterate_stays_in_the_ball_and_the_bounds(one_thread, space, to_space):
    model = Recorded(20)
    x, y = batch(64, 20)
    x[:8] = x[:8].round()  # corners of the box: the clamp binds there
    eps = 0.5
    attack = build_attack({"method": "pgd", "norm": "l2", "eps": eps, "steps": 10, "step_size": 0.2,
                           "space": space})
    result = attack(model, x, y)
    assert len(model.seen) == 11  # 10 gradient steps and the success check, each on the whole batch
    z0 = to_space(x)
    for seen in model.seen:
        z = to_space(seen)  # the model's input is the pixel image of the iterate
        assert (torch.linalg.vector_norm(z - z0, dim=1) <= eps * (1 + 1e-6)).all()
        assert seen.min() >= 0 and seen.max() <= 1
    assert (result.norms["L2"] <= eps * (1 + 1e-6)).all()
    assert (result.norms["L2"] > 0.9 * eps).float().mean() > 0.5  # the steps do reach the sphere's boundary


def random_start(n, dim, eps, seed=0):
    """PGD's L2 random start alone: one step of size 0 from inputs far from the box's faces."""
    model = Recorded(dim)
    x = torch.full((n, dim), 0.5)
    attack = build_attack({"method": "pgd", "norm": "l2", "eps": eps, "steps": 1, "step_size": 0, "seed": seed})
    return attack(model, x, torch.zeros(n, dtype=torch.long)).x_adv - x


def test_random_start_radius_is_eps_u_to_the_one_over_d(one_thread):
    eps, d = 0.2, 3
    delta = random_start(4000, d, eps).double()
    r = torch.linalg.vector_norm(delta, dim=1) / eps
    assert r.max() <= 1 + 1e-6
    # P(r <= t) = t^d, the volume fraction: r^d is uniform on [0, 1]
    assert stats.kstest(r.pow(d).numpy(), "uniform").pvalue > 1e-3
    # ...and the test has power in d = 3: the radius of a uniform point is not uniform, nor is eps U^(1/2)
    assert stats.kstest(r.numpy(), "uniform").pvalue < 1e-6
    assert stats.kstest(r.pow(2).numpy(), "uniform").pvalue < 1e-6


def test_random_start_direction_is_uniform(one_thread):
    delta = random_start(4000, 3, 0.2, seed=1).double()
    u = delta / torch.linalg.vector_norm(delta, dim=1, keepdim=True)
    # on the 2-sphere each coordinate of a uniform direction is uniform on [-1, 1] (Archimedes), the azimuth on
    # [-pi, pi]
    for k in range(3):
        assert stats.kstest(u[:, k].numpy(), "uniform", args=(-1, 2)).pvalue > 1e-3
    azimuth = torch.atan2(u[:, 1], u[:, 0]).numpy()
    assert stats.kstest(azimuth, "uniform", args=(-math.pi, 2 * math.pi)).pvalue > 1e-3
