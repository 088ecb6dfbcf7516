"""Indirect dx estimate (SPEC 5, GAN projection): the small cGAN and the two-phase z projection."""
from __future__ import annotations

import pytest
import torch

from advpipe.data import load_split
from advpipe.estimate.indirect import (ConditionalGenerator, directions, project, project_all_classes,
                                       train_cgan)

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"log": lambda _: None, "progress": False}


@pytest.fixture(scope="module")
def digits01(one_thread):
    """Digits 0 and 1 of the scikit-learn 8x8 train split (pixels in [0,1]), labels 0/1."""
    train = load_split({"source": "digits", "test_fraction": 0.3}, "train", "unused", 0)
    keep = train.y < 2
    return train.x[keep], train.y[keep]


@pytest.fixture(scope="module")
def cgan01(digits01):
    """A small cGAN trained for a few seconds on digits 0/1, range [-1, 1]."""
    x, y = digits01
    # lr 2e-4 / 8e-4 rather than the default 1e-4 / 4e-4: 240 steps suffice for every seed 0-4 tried
    g, rows = train_cgan(x, y, 2, range=(-1, 1), z_dim=16, epochs=30, batch_size=32, width=64, lr=2e-4, lr_d=8e-4,
                         seed=0, **QUIET)
    return g, rows


def random_generator(z_dim=8, shape=(1, 4, 4), seed=0) -> ConditionalGenerator:
    torch.manual_seed(seed)
    return ConditionalGenerator(z_dim, 3, shape, width=32).eval()


def test_generator_shapes_and_range():
    torch.manual_seed(0)
    for shape, kind in [((1, 8, 8), "mlp"), ((1, 28, 28), "conv"), ((3, 32, 32), "conv")]:
        g = ConditionalGenerator(16, 10, shape, range=(-0.5, 2.0), width=32)
        out = g(3 * torch.randn(5, 16), torch.arange(5))
        assert g.kind == kind and out.shape == (5, *shape)
        assert out.min() >= -0.5 and out.max() <= 2.0
        again = ConditionalGenerator(**g.spec)  # a checkpoint is rebuilt from spec
        again.load_state_dict(g.state_dict())
        assert torch.equal(again(torch.zeros(2, 16), torch.arange(2)), g(torch.zeros(2, 16), torch.arange(2)))


def test_cgan_samples_are_recognisable(digits01, cgan01):
    """A nearest-class-mean classifier built on real digits labels >= 90% of samples as their conditioning class."""
    x, y = digits01
    g, rows = cgan01
    assert len(rows) == 30 and set(rows[0]) == {"epoch", "loss_d", "loss_g", "d_real", "d_fake"}
    real = (-1 + 2 * x).flatten(1)
    means = torch.stack([real[y == c].mean(0) for c in (0, 1)])
    c = torch.arange(2).repeat(200)
    with torch.no_grad():
        fake = g(torch.randn(400, 16, generator=torch.Generator().manual_seed(1)), c).flatten(1)
    agree = (torch.cdist(fake, means).argmin(1) == c).float().mean().item()
    assert agree >= 0.9, agree


def test_same_seed_same_generator(digits01):
    x, y = (t[:64] for t in digits01)
    kw = dict(range=(-1, 1), z_dim=8, epochs=2, batch_size=16, width=16, **QUIET)
    before = torch.get_rng_state()
    a, rows_a = train_cgan(x, y, 2, seed=3, **kw)
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is left alone
    b, rows_b = train_cgan(x, y, 2, seed=3, **kw)
    c, _ = train_cgan(x, y, 2, seed=4, **kw)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and rows_a == rows_b
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_projection_recovers_a_known_z(cgan01):
    """x = G(z0, c) for small z0: phase 1 alone finds z0 again (MSE < 1e-4, natural units [-1,1]; measured
    < 1e-6); the default two phases (600 + 150 steps, lambda_z 0.03) stay within MSE 0.01 (pixel RMS 0.1;
    measured ~1e-3) while shrinking |z|."""
    g, _ = cgan01
    gen = torch.Generator().manual_seed(2)
    z0, c = 0.5 * torch.randn(8, 16, generator=gen), torch.arange(8) % 2
    with torch.no_grad():
        x = g(z0, c)
    x_hat, z, mse = project(g, x, c, steps1=600, steps2=0)
    assert mse.max() < 1e-4, mse
    assert ((z - z0).norm(dim=1) < 0.05 * z0.norm(dim=1)).all()
    assert torch.allclose(mse, (x_hat - x).square().flatten(1).mean(1))
    _, z_default, mse_default = project(g, x, c)
    assert mse_default.max() < 1e-2, mse_default
    assert (z_default.norm(dim=1) < z0.norm(dim=1)).all()


@pytest.mark.parametrize("dtype, atol_z", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_rows_are_independent(dtype, atol_z):
    """One row at a time gives the batched result: rows share nothing (summed loss, elementwise Adam).

    float64 shows the algorithm exact; in float32 BLAS rounds a matmul differently for other batch sizes
    (1 ulp in G's output), which Adam carries into z at ~1e-6 (|z| ~ 5); images and MSE stay within 1e-6.
    """
    g = random_generator().to(dtype)
    gen = torch.Generator().manual_seed(0)
    x, c = 2 * torch.rand(6, 1, 4, 4, generator=gen, dtype=dtype) - 1, torch.tensor([0, 1, 2, 2, 1, 0])
    kw = dict(steps1=100, steps2=30, lambda_z=0.03)
    x_hat, z, mse = project(g, x, c, **kw)
    assert z.dtype == x_hat.dtype == dtype
    alone = [torch.cat(t) for t in zip(*(project(g, x[i:i + 1], c[i:i + 1], **kw) for i in range(6)))]
    assert torch.allclose(x_hat, alone[0], atol=min(atol_z, 1e-6), rtol=0)
    assert torch.allclose(z, alone[1], atol=atol_z, rtol=0)
    assert torch.allclose(mse, alone[2], atol=min(atol_z, 1e-6), rtol=0)


def test_phase2_penalty_shrinks_z():
    g = random_generator(z_dim=16, shape=(1, 8, 8))
    x, c = 2 * torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) - 1, torch.arange(6) % 3
    _, z1, _ = project(g, x, c, steps1=200, steps2=0)
    _, z2, _ = project(g, x, c, steps1=200, steps2=50, lambda_z=1.5)
    assert (z2.norm(dim=1) < z1.norm(dim=1)).all()
    _, z0, _ = project(g, x, c, steps1=0, steps2=0)
    assert torch.equal(z0, torch.zeros_like(z0))  # z starts at 0 (the original's init)


def test_all_classes_chunks_resume_and_directions():
    g = random_generator()
    x = 2 * torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0)) - 1
    kw = dict(steps1=20, steps2=5, progress=False)
    chunks = list(project_all_classes(g, x, 3, batch_size=2, **kw))
    assert [first for first, *_ in chunks] == [0, 2, 4]
    x_hat, z, mse = (torch.cat(t) for t in list(zip(*chunks))[1:])
    assert x_hat.shape == (5, 3, 1, 4, 4) and z.shape == (5, 3, 8) and mse.shape == (5, 3)
    rows = project(g, x.repeat_interleave(3, 0), torch.arange(3).repeat(5), steps1=20, steps2=5)
    assert torch.allclose(x_hat.flatten(0, 1), rows[0], atol=1e-6, rtol=0)
    resumed = list(project_all_classes(g, x, 3, batch_size=2, start=3, **kw))
    assert [first for first, *_ in resumed] == [3]
    assert torch.allclose(resumed[0][1], x_hat[3:], atol=1e-6, rtol=0)
    dx = directions(x_hat, x)
    assert dx.shape == x_hat.shape and torch.allclose(x + dx[:, 1], x_hat[:, 1])
    assert torch.equal(directions(x_hat[:, 0], x), x_hat[:, 0] - x)
