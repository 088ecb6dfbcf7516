"""Indirect estimate of dx (SPEC 5, "GAN projection"): a class-conditional GAN, then, for every image x and
class c, the point G(z*, c) of class c's generated manifold closest to x; dx_hat(x, c) = G(z*, c) - x.

The original (ricbl/gradient-direction-of-robust-models, src/cgan) trains a multi-hinge BigGAN per dataset.
BigGAN is out of reach on two CPU cores, so a small class-conditional GAN stands in for it: a DCGAN-style
conv generator (an MLP for tiny images) conditioned on a class embedding, and a projection discriminator
with spectral norm, trained with the hinge loss (BigGAN's default loss; the multi-hinge class loss is
left out). Neither network normalises over the batch, so G(z, c) of one row never depends on the others.

The z projection follows src/indirect_method/{generator,util_defense_GAN}.py: z starts at 0, phase 1 runs
600 Adam steps (lr 0.2; CIFAR 0.1) on MSE(G(z, c), x), phase 2 a fresh Adam for 150 steps (lr 0.2) on
MSE + lambda_z * mean(z^2) (0.03; MNIST 1.5). The original averages both terms over the batch; here
each row's loss is summed instead, which is the same per-row objective (Adam ignores the constant 1/B
scale, bar its eps) and keeps rows independent: Adam is elementwise, so a row's z does not depend on
what else is in the batch (exactly in float64; in float32 BLAS may round a row's matmul differently for
another batch size, ~1e-7 in G(z, c), which Adam carries into z at ~1e-6). Images and target classes are
optimised together (B x C rows). The original runs under CUDA mixed precision; CPU runs float32.

Data conventions: pixels x in [0,1] with a declared natural range [lo, hi] (natural = lo + (hi-lo)*x);
the generator outputs natural units, and so are the directions.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm
from tqdm.auto import tqdm

Range = Sequence[float]


def _base_side(side: int) -> tuple[int, int]:
    """(upsamplings k, side 4*2^k): the smallest such square covering `side` (28 -> 32, cropped as the
    original crops its 32x32 MNIST generator)."""
    k = 0
    while 4 * 2 ** k < side:
        k += 1
    return k, 4 * 2 ** k


def _pick_kind(kind: str, shape: Sequence[int]) -> str:
    if kind not in ("auto", "mlp", "conv"):
        raise ValueError(f"kind: expected 'auto', 'mlp' or 'conv', got {kind!r}")
    if kind == "auto":  # convolutions pay off from 16x16 (MNIST, CIFAR); 8x8 digits and smaller get an MLP
        return "conv" if min(shape[1:]) >= 16 else "mlp"
    return kind


def _conv_generator(d_in: int, channels: int, side: int, width: int) -> nn.Sequential:
    """DCGAN-style: linear to width x 4 x 4, then (nearest x2, conv 3x3, ReLU) blocks halving the channels, up
    to 4*2^k >= side (cropped in forward). No batch norm: a row's image must not depend on its batch."""
    k, _ = _base_side(side)
    chans = [width // 2 ** i for i in range(k + 1)]
    layers: list[nn.Module] = [nn.Linear(d_in, chans[0] * 16), nn.ReLU(), nn.Unflatten(1, (chans[0], 4, 4))]
    for c_in, c_out in zip(chans[:-1], chans[1:]):
        layers += [nn.Upsample(scale_factor=2), nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
    layers.append(nn.Conv2d(chans[-1], channels, 3, padding=1))
    return nn.Sequential(*layers)


class ConditionalGenerator(nn.Module):
    """G(z, c): z (n, z_dim), classes c (n,) -> images (n, *shape) in the natural range [lo, hi].

    The class enters as a learned embedding concatenated to z (BigGAN's conditional BN stands here).
    `spec` holds the constructor arguments, so a checkpoint is rebuilt as ConditionalGenerator(**spec).
    """

    def __init__(self, z_dim: int = 128, num_classes: int = 10, shape: Sequence[int] = (1, 8, 8), *,
                 range: Range = (-1.0, 1.0), width: int = 256, embed_dim: int = 32, kind: str = "auto"):
        super().__init__()
        self.z_dim, self.num_classes, self.shape = int(z_dim), int(num_classes), tuple(int(s) for s in shape)
        self.lo, self.hi = float(range[0]), float(range[1])
        self.kind = _pick_kind(kind, self.shape)
        self.spec = {"z_dim": self.z_dim, "num_classes": self.num_classes, "shape": list(self.shape),
                     "range": [self.lo, self.hi], "width": int(width), "embed_dim": int(embed_dim),
                     "kind": self.kind}
        self.embed = nn.Embedding(self.num_classes, embed_dim)
        ch, h, w = self.shape
        d_in = self.z_dim + embed_dim
        if self.kind == "mlp":
            self.net = nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                     nn.Linear(width, ch * h * w), nn.Unflatten(1, self.shape))
        else:
            self.net = _conv_generator(d_in, ch, max(h, w), width)

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        out = torch.tanh(self.net(torch.cat([z, self.embed(c)], dim=1)))
        _, h, w = self.shape
        top, left = (out.shape[2] - h) // 2, (out.shape[3] - w) // 2
        out = out[:, :, top:top + h, left:left + w]
        return self.lo + (self.hi - self.lo) * (out + 1) / 2


class ProjectionDiscriminator(nn.Module):
    """D(x, c) = psi(phi(x)) + <embed(c), phi(x)> (Miyato & Koyama's projection discriminator), spectral
    norm on every layer; x in natural units. Conv features end in a spatial sum, as in BigGAN's D."""

    def __init__(self, num_classes: int, shape: Sequence[int], *, width: int = 256, kind: str = "auto",
                 sn: bool = True):
        super().__init__()
        wrap = spectral_norm if sn else (lambda m: m)
        ch, h, w = shape
        if _pick_kind(kind, shape) == "mlp":
            self.features = nn.Sequential(nn.Flatten(), wrap(nn.Linear(ch * h * w, width)), nn.LeakyReLU(0.2),
                                          wrap(nn.Linear(width, width)), nn.LeakyReLU(0.2))
            feat = width
        else:
            k, _ = _base_side(max(h, w))
            chans = [ch] + [width // 2 ** i for i in range(k, -1, -1)]  # double channels as side halves
            layers: list[nn.Module] = []
            for c_in, c_out in zip(chans[:-1], chans[1:]):
                layers += [wrap(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            self.features = nn.Sequential(*layers)
            feat = chans[-1]
        self.psi = wrap(nn.Linear(feat, 1))
        self.embed = wrap(nn.Embedding(num_classes, feat))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        phi = self.features(x)
        if phi.dim() == 4:
            phi = phi.sum(dim=(2, 3))
        return self.psi(phi).squeeze(1) + (self.embed(c) * phi).sum(1)


def train_cgan(x_pixels: Tensor, y: Tensor, num_classes: int, *, range: Range = (-1.0, 1.0), z_dim: int = 128,
               epochs: int = 50, batch_size: int = 64, lr: float = 1e-4, lr_d: float = 4e-4,
               betas: tuple[float, float] = (0.0, 0.9),
               width: int = 256, kind: str = "auto", sn: bool = True, seed: int = 0,
               device: torch.device | str = "cpu", log: Callable[[str], None] = print,
               progress: bool = True) -> tuple[ConditionalGenerator, list[dict[str, float]]]:
    """Train G and D with the hinge loss on x_pixels (N, C, H, W) in [0,1], labels y (N,).

    One D step, then one G step per batch; fake rows take the real batch's classes (so the class
    frequencies of the data) and fresh z ~ N(0, I). Weights, shuffling and z are drawn from `seed` alone
    (the global RNG is left as it was): same seed, same generator. Returns (G in eval mode, one row per
    epoch: mean loss_d, loss_g, d_real, d_fake).
    """
    device = torch.device(device)
    lo, hi = float(range[0]), float(range[1])
    x = (lo + (hi - lo) * x_pixels.float()).cpu()
    y = y.long().cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = ConditionalGenerator(z_dim, num_classes, x.shape[1:], range=(lo, hi), width=width, kind=kind)
        d = ProjectionDiscriminator(num_classes, x.shape[1:], width=width, kind=kind, sn=sn)
    g, d = g.to(device), d.to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=lr_d, betas=betas)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for epoch in tqdm(list(_epochs(epochs)), desc="train cgan", unit="epoch", disable=not progress):
        g.train(), d.train()
        row = _cgan_epoch(g, d, opt_g, opt_d, x, y, batch_size, gen)
        rows.append({"epoch": epoch, **row})
        log(f"cgan epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
    return g.eval(), rows


def _epochs(n: int) -> range:
    return range(1, n + 1)  # out here: train_cgan's `range` argument shadows the builtin


def _cgan_epoch(g: ConditionalGenerator, d: ProjectionDiscriminator, opt_g: torch.optim.Optimizer,
                opt_d: torch.optim.Optimizer, x: Tensor, y: Tensor, batch_size: int,
                gen: torch.Generator) -> dict[str, float]:
    """One pass over (x, y) in a random order: a hinge D step, then a G step, per batch; mean statistics."""
    device = next(g.parameters()).device
    sums = torch.zeros(4, device=device)  # loss_d, loss_g, d_real, d_fake: summed on the device, no sync
    for idx in torch.randperm(len(x), generator=gen).split(batch_size):
        # non_blocking: no host sync per batch (a blocking copy from pageable memory waits for the queued GPU work)
        xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
        z = torch.randn(len(idx), g.z_dim, generator=gen).to(device, non_blocking=True)
        with torch.no_grad():
            fake = g(z, yb)
        d_real, d_fake = d(xb, yb), d(fake, yb)
        loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        z = torch.randn(len(idx), g.z_dim, generator=gen).to(device, non_blocking=True)
        loss_g = -d(g(z, yb), yb).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        sums += torch.stack([loss_d, loss_g, d_real.mean(), d_fake.mean()]).detach() * len(idx)
    return dict(zip(("loss_d", "loss_g", "d_real", "d_fake"), (sums / len(x)).tolist()))


def _descend(generator: ConditionalGenerator, x: Tensor, c: Tensor, z: Tensor, steps: int, lr: float,
             lambda_z: float, amp: bool, desc: str, progress: bool) -> Tensor:
    """One phase: a fresh Adam on z from `z` (the original builds a new optimizer and scaler per phase)."""
    z = z.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    for _ in tqdm(range(steps), desc=desc, unit="step", disable=not progress, leave=False):
        z.grad = None
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = _row_loss(generator(z, c), x, z, lambda_z).sum()  # summed: rows stay independent
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return z.detach()


def _row_loss(x_hat: Tensor, x: Tensor, z: Tensor, lambda_z: float) -> Tensor:
    loss = (x_hat.to(x.dtype) - x).square().flatten(1).mean(1)  # float16 under amp: the loss in x's dtype
    return loss + lambda_z * z.square().mean(1) if lambda_z else loss


def project(generator: ConditionalGenerator, x_nat: Tensor, classes: Tensor, *, steps1: int = 600,
            lr1: float = 0.2, steps2: int = 150, lr2: float = 0.2, lambda_z: float = 0.03,
            amp: bool | None = None, progress: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Project each row x_nat[i] (natural units) onto class classes[i]'s manifold: z from 0, `steps1` Adam
    steps at lr1 on MSE, then `steps2` at lr2 on MSE + lambda_z * mean(z^2).

    Returns (x_hat = G(z*, c) (rows, *shape), z* (rows, z_dim), mse (rows,): mean squared pixel error of
    x_hat, natural units), on the generator's device, in the generator's dtype. `amp` (default: on CUDA
    only) runs G in float16 with a GradScaler as the original did; CPU runs float32. Rows are independent
    (module docstring), except that under amp a step the scaler skips for an overflow is skipped for the
    whole batch.
    """
    device = next(generator.parameters()).device
    amp = device.type == "cuda" if amp is None else bool(amp)
    if amp and device.type != "cuda":
        raise ValueError("project: amp needs the generator on CUDA (CPU runs float32)")
    dtype = next(generator.parameters()).dtype  # float32, or float64 for exactness checks
    x = x_nat.to(device, dtype)
    c = classes.to(device).long()
    was_training = generator.training
    frozen = [p.requires_grad for p in generator.parameters()]
    generator.eval().requires_grad_(False)  # only z is optimised: no weight gradients to compute
    try:
        z = torch.zeros(len(x), generator.z_dim, device=device, dtype=dtype)
        z = _descend(generator, x, c, z, steps1, lr1, 0.0, amp, "project: MSE", progress)
        z = _descend(generator, x, c, z, steps2, lr2, lambda_z, amp, "project: MSE + |z|", progress)
        with torch.no_grad():
            x_hat = generator(z, c).to(dtype)
            mse = _row_loss(x_hat, x, z, 0.0)
    finally:
        for p, rg in zip(generator.parameters(), frozen):
            p.requires_grad_(rg)
        generator.train(was_training)
    return x_hat, z, mse


def project_all_classes(generator: ConditionalGenerator, x_nat: Tensor, num_classes: int, batch_size: int = 64,
                        *, start: int = 0, progress: bool = True,
                        **kwargs) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
    """Project every image of x_nat (N, *shape) onto every class, `batch_size` images (x all classes) at a time.

    Yields (first image index, x_hat (b, num_classes, *shape), z (b, num_classes, z_dim), mse (b, num_classes)),
    on the CPU, chunk by chunk, so a caller can append to a file and resume: `start` skips the images
    before it (chunks keep their boundaries relative to `start`). kwargs go to `project`. A row's result
    does not depend on its chunk (module docstring), so resuming changes nothing beyond float32 rounding.
    """
    n = len(x_nat)
    classes = torch.arange(num_classes)
    with tqdm(total=n, initial=start, desc="project", unit="img", disable=not progress) as bar:
        for first in range(start, n, batch_size):
            xb = x_nat[first:first + batch_size]
            b = len(xb)
            rows_x = xb.unsqueeze(1).expand(b, num_classes, *xb.shape[1:]).reshape(b * num_classes, *xb.shape[1:])
            x_hat, z, mse = project(generator, rows_x, classes.repeat(b), **kwargs)
            yield (first, x_hat.cpu().view(b, num_classes, *xb.shape[1:]), z.cpu().view(b, num_classes, -1),
                   mse.cpu().view(b, num_classes))
            bar.update(b)


def directions(x_hat: Tensor, x_nat: Tensor) -> Tensor:
    """dx_hat = G(z*, c) - x in natural units; x_hat (N, C, ...) per class against x_nat (N, ...), or
    row against row when the shapes match."""
    if x_hat.dim() == x_nat.dim() + 1:
        x_nat = x_nat.unsqueeze(1)
    return x_hat - x_nat
