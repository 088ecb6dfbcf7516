"""Direct estimate of dx, the vector from x to the closest example of the other class, by a modified VRGAN
(SPEC 5 "Direct estimate of dx"; ricbl/gradient-direction-of-robust-models src/direct_method/train.py,
VRGANTraining). A generator G(x, 1 - y, y) -> dx_hat is trained against a one-logit critic D:

    L_D = l_dx * BCE(D(x), y) + l_dx' * BCE(D(x + dx_hat), y)
    L_G = l_g * BCE(D(x + dx_hat), 1 - y) + l_regG * |dx_hat|_2 / sqrt(dim)

x and dx_hat are in natural units (natural = lo + (hi - lo) * pixels, SPEC 5 uses [-1, 1]); D takes pixels.
"""
from __future__ import annotations

import builtins
import copy
import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from advpipe.estimate.unet import UNetGenerator, init_weights

# (x_pixels, y), or a callable epoch -> (x_pixels, y) for data drawn fresh every epoch (Spheres).
Data = tuple[Tensor, Tensor] | Callable[[int], tuple[Tensor, Tensor]]
# The per-batch means accumulated over an epoch, in this order.
LOSS_NAMES = ("l_dx", "l_dxprime", "classifier_loss", "l_g", "l_regg", "gen_loss")


class MLPGenerator(nn.Module):
    """G(x, 1 - y, y) -> dx_hat for vectors (Spheres): [x, 1 - y, y] (dim + 2) -> (Linear-ReLU-BN) x len(hidden)
    -> Linear -> dim, the sphere classifier's shape; the output takes x's shape."""

    def __init__(self, dim: int, hidden: Sequence[int] = (1000, 1000)):
        super().__init__()
        layers: list[nn.Module] = []
        width = dim + 2
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.BatchNorm1d(h)]
            width = h
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)
        self.dim = dim
        self.apply(init_weights)  # the original's weights_init: only the BN weights (N(0.1, 0.01)) change

    def forward(self, x: Tensor, neg_y: Tensor, y: Tensor) -> Tensor:
        flat = x.reshape(len(x), -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"MLPGenerator(dim={self.dim}) got inputs of {flat.shape[1]} values")
        cond = torch.stack([neg_y.reshape(-1), y.reshape(-1)], 1).to(flat.dtype)
        return self.net(torch.cat([flat, cond], 1)).reshape(x.shape)


def bce_one_logit(d: Tensor, y: Tensor) -> Tensor:
    """Per-sample BCE-with-logits written symmetrically, y * softplus(-d) + (1 - y) * softplus(d), as the
    original (its comment: torch's BCE was numerically asymmetric between the classes). d, y: (B,)."""
    return y * F.softplus(-d) + (1 - y) * F.softplus(d)


def decision(critic: nn.Module, pixels: Tensor) -> Tensor:
    """The critic's decision value d (B,) on pixels: a Classifier's raw output (forward_normalized after its own
    normalisation), a plain module's output; one column is d, two logits give d = z1 - z0."""
    if hasattr(critic, "forward_normalized"):
        raw = critic.forward_normalized(critic.normalize(pixels))
    else:
        raw = critic(pixels)
    raw = raw.reshape(len(raw), -1)
    if raw.shape[1] == 1:
        return raw[:, 0]
    if raw.shape[1] == 2:
        return raw[:, 1] - raw[:, 0]
    raise ValueError(f"the VRGAN critic needs one decision value (or two logits) per sample, got {raw.shape[1]}")


def _losses(critic: nn.Module, generator: nn.Module, x: Tensor, y: Tensor, weights: Sequence[float],
            lo: float, hi: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(the six LOSS_NAMES means (6,), L_D, L_G, dx_hat) on natural-unit x (B, ...) and float y (B,).

    x + dx_hat is not clamped to the range (the original does not clamp it)."""
    w_dx, w_dxprime, w_g, w_regg = weights
    dx = generator(x, 1 - y, y)
    width = hi - lo
    d_xprime = decision(critic, (x + dx - lo) / width)
    d_x = decision(critic, (x - lo) / width)
    l_dx = bce_one_logit(d_x, y).mean()
    l_dxprime = bce_one_logit(d_xprime, y).mean()
    l_d = w_dx * l_dx + w_dxprime * l_dxprime
    l_g = bce_one_logit(d_xprime, 1 - y).mean()
    flat = dx.reshape(len(dx), -1)
    l_regg = (flat.norm(dim=1) / math.sqrt(flat.shape[1])).mean()  # the paper's Eq. 12
    l_gen = w_g * l_g + w_regg * l_regg
    return torch.stack([l_dx, l_dxprime, l_d, l_g, l_regg, l_gen]).detach(), l_d, l_gen, dx


def _critic_train_mode(critic: nn.Module) -> None:
    """Train mode with every BatchNorm frozen in eval mode, as the original's critic (after Baumgartner et al.
    2018): its running statistics stay what they were and the batch never normalises itself."""
    critic.train()
    for m in critic.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _epoch_data(data: Data, epoch: int) -> tuple[Tensor, Tensor]:
    return data(epoch) if callable(data) else data


def _batch_indices(n: int, iterations: int, batch_size: int, gen: torch.Generator) -> Tensor:
    """(iterations, batch) indices: fresh permutations, each cut to whole batches (the original's train loader
    drops the last partial batch and ChangeLoaderSize restarts it when an epoch asks for more)."""
    bs = min(batch_size, n)
    per_perm = n // bs
    perms = [torch.randperm(n, generator=gen)[:per_perm * bs] for _ in range(-(-iterations // per_perm))]
    return torch.cat(perms).view(-1, bs)[:iterations]


def _validate(critic: nn.Module, generator: nn.Module, data: tuple[Tensor, Tensor], batch_size: int,
              weights: Sequence[float], lo: float, hi: float,
              reference: Callable[[Tensor, Tensor], Tensor] | None) -> dict[str, float]:
    """Eval-mode losses on the validation set (means over samples), the mean |dx_hat| and |x + dx_hat| per class
    (the original's sphere norm check), and with `reference` the mean cos(dx, dx_hat)."""
    critic.eval()
    generator.eval()
    device = next(generator.parameters()).device
    x_all, y_all = data
    sums = torch.zeros(len(LOSS_NAMES), device=device)
    norms, cos = [], []
    with torch.no_grad():
        for start in range(0, len(x_all), batch_size):
            y = y_all[start:start + batch_size].to(device).float().reshape(-1)
            x = lo + (hi - lo) * x_all[start:start + batch_size].to(device)
            values, _, _, dx = _losses(critic, generator, x, y, weights, lo, hi)
            sums += values * len(y)
            flat_dx, flat_x = dx.reshape(len(dx), -1), x.reshape(len(x), -1)
            norms.append(torch.stack([y, flat_dx.norm(dim=1), (flat_x + flat_dx).norm(dim=1)], 1))
            if reference is not None:
                cos.append(F.cosine_similarity(reference(x, y).reshape(len(x), -1), flat_dx, dim=1))
    row = {f"val_{k}": v for k, v in zip(LOSS_NAMES, (sums / len(x_all)).tolist())}
    row["val_total_loss"] = row["val_classifier_loss"] + row["val_gen_loss"]
    norms_t = torch.cat(norms)
    for c in (0, 1):
        mine = norms_t[norms_t[:, 0] == c]
        row[f"val_norm_dx_{c}"] = mine[:, 1].mean().item() if len(mine) else float("nan")
        row[f"val_norm_xprime_{c}"] = mine[:, 2].mean().item() if len(mine) else float("nan")
    if reference is not None:
        row["val_cos"] = torch.cat(cos).mean().item()
    return row


def best_epoch(values: Sequence[float]) -> int:
    """Index of the best epoch: the lowest value, the LATER one on ties (the original compares with <=)."""
    best, best_value = -1, float("inf")
    for i, v in enumerate(values):
        if v <= best_value:
            best, best_value = i, v
    return best


def train_vrgan(critic: nn.Module, generator: nn.Module, train_data: Data, val_data: Data, *, epochs: int,
                iterations: int, batch_size: int, lr: float = 1e-4, lr_d: float | None = None,
                betas: tuple[float, float] = (0.0, 0.9),
                weights: Sequence[float] = (1.0, 0.01, 0.3, 0.5), range: Sequence[float] = (-1, 1), seed: int,
                select: str = "train_total_loss", reference: Callable[[Tensor, Tensor], Tensor] | None = None,
                log: Callable[[str], None] = print, progress: bool = True,
                ) -> tuple[dict[str, Tensor], dict[str, Tensor], list[dict[str, float]]]:
    """Train `generator` (G(x, 1 - y, y) -> dx_hat) and `critic` (pixels -> one decision value) together; return
    (best generator state_dict, best critic state_dict, one log row per epoch). Both modules hold the best
    epoch's weights on return, in eval mode.

    weights = (l_dx, l_dx', l_g, l_regG) (SPEC 5: 1, 0.01, 0.3, 0.5). Data are pixels (x in [0,1], y in {0,1});
    `range` = (lo, hi) maps them to natural units. Each epoch runs `iterations` batches of `batch_size`.

    As the original (train.py VRGANTraining.train_fn, init_optimizer):
    - one forward of G, D(x + dx_hat) and D(x) per batch; the critic steps on L_D, the generator on L_G. The
      original calls backward(L_D), steps D, zeroes G's gradients and then backpropagates L_G through the graph
      of the forward made before D's step; here both gradients come from that one forward (autograd restricted
      to each network's parameters), which is that order without reusing a graph whose weights changed. So
      L_D's gradient never reaches G (dx_hat is in effect detached in L_D), and D gets none from L_G;
    - x + dx_hat is not clamped to the range;
    - Adam(lr, betas (0, 0.9), no weight decay) for both;
    - the critic trains with its BatchNorms frozen in eval mode; the generator's BatchNorms train;
    - the best epoch has the lowest total loss `classifier_loss + gen_loss` (<=, the later one on ties). The
      original's "total_loss" is the mean of L_D + L_G over the epoch's TRAINING batches (its VRGAN
      validation pass adds no losses): select="train_total_loss" (default) follows it; "val_total_loss" uses
      the eval-mode losses on `val_data` instead.
    `reference(x_nat, y) -> dx` (e.g. the exact Spheres direction) adds the validation cos(dx, dx_hat) per epoch.

    Deterministic for a seed: batches come from one torch.Generator(seed) (fresh permutations each epoch) and
    nothing else draws random numbers; callable data must derive their draws from the epoch they are given.
    Initial weights are the caller's (seed the constructors).
    """
    if select not in ("train_total_loss", "val_total_loss"):
        raise ValueError(f"select: 'train_total_loss' or 'val_total_loss', got {select!r}")
    lo, hi = float(range[0]), float(range[1])
    device = next(generator.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    d_params = [p for p in critic.parameters() if p.requires_grad]
    g_params = [p for p in generator.parameters() if p.requires_grad]
    # the original's learning_rate_d: a critic slower than the generator keeps its gradient aligned longer
    opt_d = torch.optim.Adam(d_params, lr=lr if lr_d is None else lr_d, betas=tuple(betas), weight_decay=0)
    opt_g = torch.optim.Adam(g_params, lr=lr, betas=tuple(betas), weight_decay=0)
    rows: list[dict[str, float]] = []
    best_value, best_g, best_d = float("inf"), None, None
    for epoch in tqdm(builtins.range(1, epochs + 1), desc="vrgan", unit="epoch", disable=not progress):
        x_all, y_all = _epoch_data(train_data, epoch)
        batches = _batch_indices(len(x_all), iterations, batch_size, gen)
        _critic_train_mode(critic)
        generator.train()
        sums = torch.zeros(len(LOSS_NAMES), device=device)  # summed on the device: no host sync per batch
        for idx in tqdm(batches, desc=f"epoch {epoch}", unit="it", leave=False, disable=not progress):
            # non_blocking: no host sync per batch (a blocking copy from pageable memory waits for the queued GPU work)
            y = y_all[idx].to(device, non_blocking=True).float().reshape(-1)
            x = lo + (hi - lo) * x_all[idx].to(device, non_blocking=True)
            values, l_d, l_gen, _ = _losses(critic, generator, x, y, weights, lo, hi)
            opt_d.zero_grad(set_to_none=True)
            opt_g.zero_grad(set_to_none=True)
            torch.autograd.backward(l_d, inputs=d_params, retain_graph=True)
            torch.autograd.backward(l_gen, inputs=g_params)
            opt_d.step()
            opt_g.step()
            sums += values
        row: dict[str, float] = {"epoch": epoch}
        row.update(zip(LOSS_NAMES, (sums / len(batches)).tolist()))
        row["train_total_loss"] = row["classifier_loss"] + row["gen_loss"]
        row.update(_validate(critic, generator, _epoch_data(val_data, epoch), batch_size, weights, lo, hi,
                             reference))
        if row[select] <= best_value:  # best_epoch's rule, kept as we go: only the best weights are held
            best_value = row[select]
            best_g, best_d = copy.deepcopy(generator.state_dict()), copy.deepcopy(critic.state_dict())
        rows.append(row)
        log(f"epoch {epoch}: L_D {row['classifier_loss']:.4f}, L_G {row['gen_loss']:.4f}, "
            f"val L_D {row['val_classifier_loss']:.4f}, val L_G {row['val_gen_loss']:.4f}, "
            f"|dx_hat| {row['val_norm_dx_0']:.3f}/{row['val_norm_dx_1']:.3f}"
            + (f", val cos {row['val_cos']:.4f}" if reference is not None else ""))
    if best_g is None:
        raise ValueError(f"train_vrgan: no finite {select} in {epochs} epochs")
    chosen = best_epoch([r[select] for r in rows])
    for i, r in enumerate(rows):
        r["best"] = float(i == chosen)
    generator.load_state_dict(best_g)
    critic.load_state_dict(best_d)
    generator.eval()
    critic.eval()
    return best_g, best_d, rows


def estimate_dx(generator: nn.Module, x_pixels: Tensor, y: Tensor, range: Sequence[float] = (-1, 1),
                batch_size: int = 256) -> Tensor:
    """dx_hat = G(x, 1 - y, y) in natural units, shape of x_pixels, on x_pixels' device; eval mode, no grad
    (the generator's mode is restored afterwards)."""
    lo, hi = float(range[0]), float(range[1])
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    out = []
    with torch.no_grad():
        for start in builtins.range(0, len(x_pixels), batch_size):
            yb = y[start:start + batch_size].to(device).float().reshape(-1)
            xb = lo + (hi - lo) * x_pixels[start:start + batch_size].to(device)
            out.append(generator(xb, 1 - yb, yb).to(x_pixels.device))
    generator.train(was_training)
    return torch.cat(out) if out else torch.zeros_like(x_pixels)


__all__ = ["LOSS_NAMES", "MLPGenerator", "UNetGenerator", "bce_one_logit", "best_epoch", "decision",
           "estimate_dx", "train_vrgan"]
