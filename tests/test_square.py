"""Square Attack (advpipe.attacks.square), cross-checked against torchattacks.Square on the same model."""
from __future__ import annotations

import math
import time

import pytest
import torch
import torchattacks
from torch import nn

from advpipe.attacks import build_attack
from advpipe.attacks.square import image_shape, p_selection, square_linf

N = 300


class SmallCNN(nn.Module):
    """A fixed random CNN on 1 x 8 x 8 images taking pixels; its normalised space is [-1, 1]."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))

    def normalize(self, x):
        return (x - 0.5) / 0.5

    def forward_normalized(self, z):
        return self.net(z)

    def forward(self, x):
        return self.net(self.normalize(x))


class Radial(nn.Module):
    """One-logit sphere classifier d = (|x| - 1.15) k on natural inputs [-1, 1] (pixels p: x = 2p - 1)."""

    def normalize(self, x):
        return 2 * x - 1

    def forward_normalized(self, z):
        return (torch.linalg.vector_norm(z, dim=1, keepdim=True) - 1.15) * 10

    def decode(self, raw):
        return torch.cat([-raw, raw], 1)

    def forward(self, x):
        return self.decode(self.forward_normalized(self.normalize(x)))


@pytest.fixture(scope="module")
def cnn(one_thread):
    """(model, x, y): y is the clean prediction, so every sample starts correctly classified."""
    model = SmallCNN().eval()
    x = torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_success_rates_match_torchattacks(cnn):
    model, x, y = cnn
    for eps, loss in ((0.01, "margin"), (0.02, "margin"), (0.04, "margin"), (0.02, "ce")):
        start = time.perf_counter()
        ours = build_attack({"method": "square", "eps": eps, "n_queries": 200, "seed": 1, "loss": loss})(model, x, y)
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        x_ta = torchattacks.Square(model, eps=eps, n_queries=200, seed=1, loss=loss)(x, y)
        t_ta = time.perf_counter() - start
        with torch.no_grad():
            theirs = (model(x_ta).argmax(1) != y).float().mean().item()
        mine = ours.success.float().mean().item()
        p = (mine + theirs) / 2
        # two independent searches on the same samples: their rates differ by binomial noise only
        assert abs(mine - theirs) <= 3.5 * math.sqrt(2 * p * (1 - p) / N) + 0.01, (eps, mine, theirs)
        assert 0.05 < mine < 0.95  # a budget where the comparison means something
        assert (ours.x_adv - x).abs().max() <= eps + 1e-6 and (x_ta - x).abs().max() <= eps + 1e-6
        print(f"eps {eps} {loss}: success ours {mine:.3f} torchattacks {theirs:.3f}; time ratio {t_ours / t_ta:.2f}")


def trace_run(model, x, y, eps, loss="margin", n_queries=150):
    """square_linf in the [-1, 1] space with every proposal recorded."""
    z0 = 2 * x - 1
    seen = []

    def trace(it, idx, z_new, margin, before, accepted):
        seen.append((idx.clone(), z_new.clone(), margin.clone(), before.clone(), accepted.clone()))

    with torch.no_grad():
        z_adv, success, queries = square_linf(model.net, z0, y, eps, -1.0, 1.0, n_queries=n_queries, loss=loss,
                                              generator=torch.Generator().manual_seed(0), trace=trace)
    return z0, z_adv, success, queries, seen


def test_every_query_stays_in_the_ball_and_the_bounds(cnn):
    model, x, y = cnn
    eps = 0.08  # in [-1, 1] units (0.04 in pixels)
    z0, z_adv, success, _, seen = trace_run(model, x, y, eps)
    assert len(seen) > 10
    for idx, z_new, *_ in seen:
        assert (z_new - z0[idx]).abs().max() <= eps + 1e-6
        assert z_new.min() >= -1 and z_new.max() <= 1
    assert (z_adv - z0).abs().max() <= eps + 1e-6
    assert torch.equal(z_adv[~success], z0[~success])  # failures come back clean, as the original returns them


def test_accepted_queries_never_raise_the_margin(cnn):
    model, x, y = cnn
    _, z_adv, success, queries, seen = trace_run(model, x, y, 0.06)
    accepted_any = False
    for idx, _, margin, before, accepted in seen:
        assert (margin[accepted] <= before[accepted]).all()
        assert (before > 0).all()  # only samples not yet fooled are queried: per-sample stop
        accepted_any |= bool(accepted.any())
    assert accepted_any and success.any() and not success.all()
    with torch.no_grad():
        assert (model.net(z_adv[success]).argmax(1) != y[success]).all()
    # the initial point and one query per iteration until fooled: the fooled stopped early
    assert (queries[~success] == 151).all() and (queries[success] <= 151).all() and (queries[success] < 100).any()


def test_initialisation_is_vertical_stripes(cnn):
    model, x, y = cnn
    calls = []

    def scores(z):
        calls.append(z.clone())
        return model.net(z)

    z0, eps = 2 * x - 1, 0.05
    square_linf(scores, z0, y, eps, -1.0, 1.0, n_queries=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(calls[0], z0)  # the clean query decides what is attacked
    delta = calls[1] - z0
    inside = z0.abs() < 1 - eps
    assert torch.allclose(delta[inside].abs(), torch.full_like(delta[inside], eps), atol=1e-6)
    signs = torch.sign(delta)  # z0 lies strictly inside [-1, 1]: a clipped step keeps its sign
    assert (signs == signs[:, :, :1]).all()  # one sign per column: constant along the height


def test_p_schedule_matches_torchattacks():
    for n_queries in (100, 1000, 5000):
        ta = torchattacks.Square(nn.Linear(1, 1), n_queries=n_queries, p_init=0.8)
        assert [p_selection(0.8, it, n_queries) for it in range(n_queries)] == \
               [ta.p_selection(it) for it in range(n_queries)]
    assert p_selection(0.8, 0, 5000) == 0.8 and p_selection(0.8, 2500, 5000) == 0.8 / 128


@pytest.mark.parametrize("shape, expected", [((500,), (1, 20, 25)), ((784,), (1, 28, 28)), ((7,), (1, 1, 7)),
                                             ((3, 4, 5), (3, 4, 5)), ((6, 9), (1, 6, 9))])
def test_image_shape(shape, expected):
    assert image_shape(shape) == expected


def test_spheres_one_logit_vectors_in_minus_one_one(one_thread):
    # 500-d spheres of radius 1 (y = 0) and 1.3 (y = 1) with the boundary at 1.15: crossing it needs a radial
    # move of 0.15, at least 0.15 / |x^|_1 ~ 0.0084 in L-inf (SPEC 5 (b)), so eps 0.002 can never succeed.
    # Vectors are searched as 1 x 20 x 25 images; the class scores of the one logit are (-d, d).
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (60,), generator=gen)
    g = torch.randn(60, 500, generator=gen)
    x_nat = g / g.norm(dim=1, keepdim=True) * (1 + 0.3 * y[:, None])
    model = Radial()
    x = (x_nat + 1) / 2
    attack = build_attack({"method": "square", "eps": [0.002, 0.03], "n_queries": 300, "space": [-1, 1]})
    result = attack(model, x, y)
    assert result.x_adv.shape == (2, 60, 500)
    # eps 0.03 pushes every inner point out; the outer ones resist: 500 coordinates moved by eps add about
    # 500 eps^2 / (2 r) ~ 0.17 to the radius, more than a sign pattern can take away
    assert result.success[0].sum() == 0 and result.success[1][y == 0].all()
    assert (result.norms["Linf"] <= torch.tensor([[0.002], [0.03]]) + 1e-6).all()
    with torch.no_grad():
        assert torch.equal(model(result.x_adv[1]).argmax(1) != y, result.success[1])


def test_grid_points_run_with_their_own_generators(cnn):
    model, x, y = cnn
    x, y = x[:60], y[:60]
    grid = build_attack({"method": "square", "eps": [0.0, 0.02, 0.04], "n_queries": 50, "seed": 3})(model, x, y)
    alone = build_attack({"method": "square", "eps": 0.04, "n_queries": 50, "seed": 3})(model, x, y)
    assert torch.equal(grid.x_adv[2], alone.x_adv) and torch.equal(grid.x_adv[0], x)
    again = build_attack({"method": "square", "eps": 0.04, "n_queries": 50, "seed": 4})(model, x, y)
    assert not torch.equal(again.x_adv, alone.x_adv)


def test_misclassified_inputs_are_not_attacked(cnn):
    model, x, y = cnn
    x, wrong = x[:40], (y[:40] + 1) % 10
    result = build_attack({"method": "square", "eps": 0.05, "n_queries": 20, "loss": "ce"})(model, x, wrong)
    assert torch.equal(result.x_adv, x) and result.success.all()


@pytest.mark.parametrize("cfg, match", [({"loss": "cw"}, "loss"), ({"p_init": 1.5}, "p_init"),
                                        ({"n_queries": 0}, "n_queries"), ({"criterion": "btr"}, "btr")])
def test_bad_parameters_are_refused(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_attack({"method": "square", "eps": 0.1, **cfg})
