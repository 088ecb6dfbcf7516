"""Time advpipe's ARA distances (SPEC 2 calculate-ara, reduced: --n 200 images, --steps 45, eps 20) against a
hand-written torch loop of the same search (main.py `_adv_images` with best tracking, batches of 128), on the
default model (small_cnn trained like tests/conftest.py, digits test set), for both ARA kinds and momentum 0 / 0.9.

    python bench/bench_ara.py [--threads 1] [--repeats 7] [--n 200] [--steps 45]

Prints seconds (median of --repeats timed runs after one warm-up, the two implementations interleaved so that
load drift hits both alike), the ratio to the hand loop, the max |d - d(loop)| and the ARA; writes bench/out/ara.csv.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests/conftest.py: the same digits model the attack tests use
from tests.conftest import trained_digits_cnn  # noqa: E402

from advpipe.metrics import ara, ara_distances, ara_subset  # noqa: E402
from report import time_interleaved, write_rows  # noqa: E402  (bench/report.py; the script folder is on sys.path)

EPS, BATCH = 20.0, 128


def hand_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, mode: str, steps: int,
              momentum: float) -> np.ndarray:
    """The reference: the search as main.py writes it (follow mask arithmetic, best tracking), RMS per image."""
    out = []
    for xb, yb in zip(x.split(BATCH), y.split(BATCH)):
        delta = torch.zeros_like(xb, requires_grad=True)
        mom = torch.zeros_like(xb)
        best, best_ms = torch.zeros_like(xb), torch.full((len(xb),), float("inf"))
        for step in range(steps + 1):
            logits = model(xb + delta)
            (g,) = torch.autograd.grad(F.cross_entropy(logits, yb, reduction="sum"), delta)
            if mode == "l2min":
                follow = (logits.argmax(1) == yb).float()
            else:
                follow = (logits.softmax(1).gather(1, yb[:, None])[:, 0] > 1 / logits.shape[1]).float()
            ms = delta.detach().pow(2).mean((1, 2, 3))
            better = (follow == 0) & (ms < best_ms)
            best[better], best_ms[better] = delta.detach()[better], ms[better]
            if step == steps:
                break
            f = follow.view(-1, 1, 1, 1)
            d = f * g + (1 - f) * -delta.detach()
            d /= 1e-8 + d.pow(2).mean((1, 2, 3)).sqrt().view(-1, 1, 1, 1)
            if momentum > 0:
                d = mom.mul_(momentum).add_(d, alpha=1 - momentum).clone()
            delta.data.add_(d, alpha=EPS * (steps - step) / (steps * (steps + 1) / 2))
        out.append(best.pow(2).mean((1, 2, 3)).sqrt())
    return torch.cat(out).double().numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--steps", type=int, default=45)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "ara.csv")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be >= 5")
    torch.set_num_threads(args.threads)

    model, x, y = trained_digits_cnn()
    pick = ara_subset(len(y), min(args.n, len(y)))
    x, y = x[pick], y[pick]  # true labels: images already misclassified get d = 0

    rows = []
    for mode in ("l2min", "btr"):
        for momentum in (0.0, 0.9):
            impls = {
                "hand loop": lambda: hand_loop(model, x, y, mode=mode, steps=args.steps, momentum=momentum),
                "advpipe ara_distances": lambda: ara_distances(model, x, y, mode=mode, eps=EPS, steps=args.steps,
                                                               momentum=momentum, batch_size=BATCH, progress=False),
            }
            outputs, times = time_interleaved(impls, args.repeats)
            loop = statistics.median(times["hand loop"])
            for name in impls:
                med = statistics.median(times[name])
                rows.append({"mode": mode, "momentum": momentum, "implementation": name, "median_s": f"{med:.4f}",
                             "min_s": f"{min(times[name]):.4f}", "ratio_to_loop": f"{med / loop:.3f}",
                             "max_abs_diff_vs_loop": f"{np.abs(outputs[name] - outputs['hand loop']).max():.3g}",
                             "ara": f"{ara(outputs[name], 10):.5f}", "n_images": len(x), "steps": args.steps,
                             "threads": args.threads, "repeats": args.repeats})

    print(f"ARA distances, eps {EPS:g}, {args.steps} steps, {len(x)} digits images in batches of {BATCH}, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"{'mode':<6} {'mom':>4} {'implementation':<22} {'median s':>9} {'min s':>8} {'x loop':>7} "
          f"{'max|diff|':>10} {'ARA':>8}")
    for r in rows:
        print(f"{r['mode']:<6} {r['momentum']:>4} {r['implementation']:<22} {r['median_s']:>9} {r['min_s']:>8} "
              f"{r['ratio_to_loop']:>7} {r['max_abs_diff_vs_loop']:>10} {r['ara']:>8}")
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
