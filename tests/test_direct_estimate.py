"""The direct estimate of dx (SPEC 5, modified VRGAN): generators, training, estimate_dx."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advpipe.estimate.direct import (MLPGenerator, UNetGenerator, bce_one_logit, best_epoch, decision, estimate_dx,
                                     train_vrgan)

pytestmark = pytest.mark.usefixtures("one_thread")

D = 20  # small spheres: radii 1.0 (y = 0) and 1.3 (y = 1), as SPEC 5's d = 500 ones


def spheres(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels, y): x = g/|g| * r in natural units [-1, 1], stored as pixels (x + 1) / 2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    x = x / x.norm(dim=1, keepdim=True) * (1 + 0.3 * y[:, None])
    return (x + 1) / 2, y


def exact_dx(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The vector to the closest point of the other sphere: (1 - 2y) * 0.3 * x/|x|."""
    return (1 - 2 * y.float())[:, None] * 0.3 * x / x.norm(dim=1, keepdim=True)


class ToNatural(nn.Module):
    """A critic normalises inside (the Classifier convention): pixels -> natural [-1, 1]."""

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return 2 * p - 1


def critic(hidden: int = 64) -> nn.Sequential:
    """The sphere classifier's shape (Linear-ReLU-BN twice, one logit), smaller."""
    return nn.Sequential(ToNatural(), nn.Linear(D, hidden), nn.ReLU(), nn.BatchNorm1d(hidden),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.BatchNorm1d(hidden), nn.Linear(hidden, 1))


def quiet(**kw):
    return dict(log=lambda s: None, progress=False, **kw)


def test_spheres_generator_points_to_the_other_sphere():
    # Measured: val cos 0.94-0.95 after 10 x 100 iterations at lr 1e-3 (SPEC's 1e-4 needs far more steps);
    # |dx_hat| 0.36 / 0.35 for r = 1 / 1.3 against the exact 0.3 (the paper: 0.31 / 0.34).
    torch.manual_seed(0)
    net_d, net_g = critic(), MLPGenerator(D, (64, 64))
    best_g, best_d, rows = train_vrgan(net_d, net_g, lambda epoch: spheres(100 * 50, 1000 + epoch), spheres(200, 1),
                                       epochs=10, iterations=100, batch_size=50, lr=1e-3, seed=0,
                                       reference=lambda x, y: exact_dx(x, y), **quiet())
    x_pix, y = spheres(1000, 2)
    dx_hat = estimate_dx(net_g, x_pix, y, (-1, 1), batch_size=300)
    cos = F.cosine_similarity(dx_hat, exact_dx(2 * x_pix - 1, y), dim=1)
    assert cos.mean() >= 0.85
    norms = dx_hat.norm(dim=1)
    for c in (0, 1):
        assert 0.2 <= norms[y == c].mean() <= 0.45
    # The modules hold the returned best epoch, chosen by the training total loss (<=, later on ties).
    assert all(torch.equal(v, net_g.state_dict()[k]) for k, v in best_g.items())
    assert all(torch.equal(v, net_d.state_dict()[k]) for k, v in best_d.items())
    chosen = best_epoch([r["train_total_loss"] for r in rows])
    assert [r["best"] for r in rows] == [float(i == chosen) for i in range(len(rows))]
    assert rows[-1]["val_cos"] >= 0.85


def _short_run(seed: int, weights=(1.0, 0.01, 0.3, 0.5), select="train_total_loss"):
    torch.manual_seed(0)
    net_d, net_g = critic(16), MLPGenerator(D, (16, 16))
    out = train_vrgan(net_d, net_g, spheres(64, 3), spheres(32, 4), epochs=2, iterations=5, batch_size=16,
                      seed=seed, weights=weights, select=select, **quiet())
    return net_d, net_g, out


def test_same_seed_same_generator():
    g1, g2, g3 = (_short_run(s)[2][0] for s in (7, 7, 8))
    assert all(torch.equal(g1[k], g2[k]) for k in g1)
    assert not all(torch.equal(g1[k], g3[k]) for k in g1)


def test_each_loss_trains_only_its_network():
    # L_D's gradient never reaches G (dx_hat in effect detached), and L_G's never reaches D.
    torch.manual_seed(0)
    d0, g0 = critic(16).state_dict(), MLPGenerator(D, (16, 16)).state_dict()
    net_d, net_g, _ = _short_run(0, weights=(1.0, 0.01, 0.0, 0.0))
    assert all(torch.equal(p, g0[k]) for k, p in net_g.named_parameters())
    net_d, net_g, _ = _short_run(0, weights=(0.0, 0.0, 0.3, 0.5), select="val_total_loss")
    assert all(torch.equal(p, d0[k]) for k, p in net_d.named_parameters())
    assert not all(torch.equal(p, g0[k]) for k, p in net_g.named_parameters())


def test_best_epoch_lowest_later_on_ties():
    assert best_epoch([3.0, 2.0, 2.5, 2.0, 4.0]) == 3
    assert best_epoch([1.0]) == 0
    assert best_epoch([float("nan"), 5.0]) == 1


def test_unet_shapes_and_class_conditioning():
    torch.manual_seed(0)
    for size, downs in ((8, 2), (32, 2), (32, 4)):
        net = UNetGenerator(1, nf=8, downsamplings=downs)
        x = torch.rand(6, 1, size, size) * 2 - 1
        y = torch.tensor([0, 1, 0, 1, 0, 1])
        net.eval()
        assert net(x, 1 - y, y).shape == x.shape
        # In train mode (the BNs normalise; fresh eval-mode BNs scale every layer by their 0.1 weights).
        net.train()
        out, flipped = net(x, 1 - y, y), net(x, y, 1 - y)
        assert out.shape == x.shape
        assert (out - flipped).abs().mean() > 0.2 * out.abs().mean()
    with pytest.raises(ValueError, match="divisible by 16"):
        UNetGenerator(1, nf=8, downsamplings=4)(torch.zeros(2, 1, 8, 8), torch.zeros(2), torch.ones(2))


def test_mlp_generator_input_is_x_and_both_classes():
    net = MLPGenerator(5, (7,))
    assert net.net[0].in_features == 7 and net.net[-1].out_features == 5
    assert torch.allclose(net.net[2].weight, torch.full((7,), 0.1), atol=0.05)  # BN weight N(0.1, 0.01)
    assert net(torch.zeros(3, 1, 5), torch.ones(3), torch.zeros(3)).shape == (3, 1, 5)


def test_estimate_dx_natural_units_batched_and_mode_restored():
    class Echo(nn.Module):  # dx_hat = x (natural) + 10 * y: shows the range mapping and the class order
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x, neg_y, y):
            assert not self.training
            return x + 10 * y.reshape(-1, 1) + self.w

    net = Echo().train()
    x_pix, y = torch.rand(7, 3), torch.tensor([0, 1, 1, 0, 1, 0, 0])
    dx = estimate_dx(net, x_pix, y, (-2, 4), batch_size=3)
    assert torch.allclose(dx, -2 + 6 * x_pix + 10 * y[:, None])
    assert net.training


def test_bce_one_logit_and_decision():
    d = torch.tensor([-3.0, -0.5, 0.0, 2.0])
    assert torch.allclose(bce_one_logit(d, torch.ones(4)), bce_one_logit(-d, torch.zeros(4)))
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    assert torch.allclose(bce_one_logit(d, y), F.binary_cross_entropy_with_logits(d, y, reduction="none"))

    class OneLogit(nn.Module):  # the Classifier interface: pixels -> normalize -> forward_normalized
        def normalize(self, x):
            return x - 1

        def forward_normalized(self, z):
            return z.sum(1, keepdim=True)

    p = torch.ones(2, 3)
    assert torch.equal(decision(OneLogit(), p), torch.zeros(2))
    assert torch.equal(decision(nn.Identity(), torch.tensor([[1.0, 4.0]])), torch.tensor([3.0]))
    with pytest.raises(ValueError, match="one decision value"):
        decision(nn.Identity(), torch.zeros(2, 3))
