"""Time the shared attack engine (advpipe.attacks: build_attack -> Attack.run -> GradientAttack) against a
hand-written torch loop doing the same math and against torchattacks, on one model, in the same run:

  linf  PGD L-inf, eps 8/255, step 2/255, 10 steps, no random start: engine vs hand loop vs torchattacks.PGD
  l2    PGD L2, eps 0.5, step 0.1, 10 steps, no random start: engine (norm l2) vs hand loop vs torchattacks.PGDL2
  grid  PGD L-inf over K eps (2/255 .. 2K/255, step eps/10, 10 steps): ONE engine attack with an eps list (its K
        eps fused into one pass over K x B inputs) vs the same attack one eps a pass (grid_batch 0) vs K hand
        loops vs K torchattacks.PGD calls

    python bench/bench_engine.py [--threads 1] [--repeats 5] [--batch 512] [--arch small_cnn] [--k 10] [--profile]

The model is freshly initialised (seeded) in eval mode on uniform random inputs of its shape (small_cnn: 1x8x8
digits-shaped; cifar_resnet: 3x32x32), attacked on its own prediction; an attack's time does not depend on
training. The engine is called as the pipeline calls it without a success check (x_adv only, the same work as
the hand loop); "engine + success" adds the success forward pass and is not held to the target. The hand loop
sums the per-sample CE as the engine does; torchattacks averages it (the same sign in exact arithmetic).

Prints seconds (median of --repeats timed rounds after one warm-up, implementations interleaved so that load
drift hits all alike), the ratios engine/hand loop and engine/torchattacks, max |x_adv - x_adv(hand loop)|, and
whether the targets hold (engine <= 1.05x the hand loop, and not slower than torchattacks; a miss smaller than
the hand loop's own spread over the rounds is flagged as within the run's noise); writes bench/out/engine.csv.
--profile adds cProfile and torch.profiler tables of one engine call and one hand loop.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from advpipe.attacks import build_attack
from advpipe.models.registry import build_model
from report import time_interleaved, write_rows  # noqa: E402  (bench/report.py; the script folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
STEPS = 10
LINF_EPS, LINF_STEP = 8 / 255, 2 / 255
L2_EPS, L2_STEP = 0.5, 0.1
TARGET = 1.05  # engine <= 1.05x the hand loop
SHAPES = {"small_cnn": (1, 8), "cifar_resnet": (3, 32)}


# ---------------------------------------------------------------- the hand-written references

def hand_linf(model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
              steps: int = STEPS) -> torch.Tensor:
    """PGD L-inf without random start: x + alpha*sign(g), x0 + clamp(x - x0, -eps, eps), clamp(0, 1)."""
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
        x = x.detach() + alpha * g.sign()
        x = x0 + torch.clamp(x - x0, -eps, eps)
        x = x.clamp(0, 1)
    return x


def _norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.flatten(1), dim=1).view(-1, *([1] * (v.dim() - 1)))


def hand_l2(model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
            steps: int = STEPS) -> torch.Tensor:
    """PGD L2 without random start: x + alpha*g/|g|, delta * min(1, eps/|delta|), clamp(0, 1)."""
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
        x = x.detach() + alpha * g / _norm(g).clamp(min=1e-12)
        delta = x - x0
        x = x0 + delta * (eps / _norm(delta).clamp(min=1e-12)).clamp(max=1.0)
        x = x.clamp(0, 1)
    return x


# ---------------------------------------------------------------- the implementations of each scenario

def engine(cfg: dict) -> Callable:
    attack = build_attack({"method": "pgd", "steps": STEPS, "random_start": False, "quantize": False, **cfg})
    return lambda model, x, y, success=False: attack(model, x, y, check_success=success).x_adv


def scenarios(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, ta) -> dict[str, dict]:
    """scenario -> {name -> zero-argument callable returning x_adv ((K, N, ...) for the grid)}."""
    grid = [2 * (i + 1) / 255 for i in range(k)]
    linf, l2 = engine({"eps": LINF_EPS, "step_size": LINF_STEP}), engine({"eps": L2_EPS, "step_size": L2_STEP,
                                                                         "norm": "l2"})
    egrid = engine({"eps": grid})  # step_size None: eps / steps for every eps; fused: one pass over (K x B)
    egrid_apart = engine({"eps": grid, "grid_batch": 0})  # the same attack, one eps a pass (K passes)
    out = {
        "linf": {"hand loop": lambda: hand_linf(model, x, y, LINF_EPS, LINF_STEP),
                 "engine": lambda: linf(model, x, y),
                 "engine + success": lambda: linf(model, x, y, True)},
        "l2": {"hand loop": lambda: hand_l2(model, x, y, L2_EPS, L2_STEP),
               "engine": lambda: l2(model, x, y)},
        f"grid K={k}": {"hand loop": lambda: torch.stack([hand_linf(model, x, y, e, e / STEPS) for e in grid]),
                        "engine": lambda: egrid(model, x, y),
                        "engine, K passes": lambda: egrid_apart(model, x, y)},
    }
    if ta is not None:
        ta_linf = ta.PGD(model, eps=LINF_EPS, alpha=LINF_STEP, steps=STEPS, random_start=False)
        ta_l2 = ta.PGDL2(model, eps=L2_EPS, alpha=L2_STEP, steps=STEPS, random_start=False)
        ta_grid = [ta.PGD(model, eps=e, alpha=e / STEPS, steps=STEPS, random_start=False) for e in grid]
        out["linf"]["torchattacks"] = lambda: ta_linf(x, y)
        out["l2"]["torchattacks"] = lambda: ta_l2(x, y)
        out[f"grid K={k}"]["torchattacks"] = lambda: torch.stack([a(x, y) for a in ta_grid])
    return out


def profile(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Where the engine's time goes beyond the hand loop's (one L-inf call each): Python (cProfile, by own time)
    and torch operators (torch.profiler, by self CPU time)."""
    import cProfile
    import pstats

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    linf = engine({"eps": LINF_EPS, "step_size": LINF_STEP})
    calls = {"hand loop": lambda: hand_linf(model, x, y, LINF_EPS, LINF_STEP), "engine": lambda: linf(model, x, y)}
    for name, f in calls.items():
        f()
        prof = cProfile.Profile()
        prof.runcall(f)
        print(f"\n==== cProfile, {name} (PGD L-inf, one call), top 15 by own time")
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    for name, f in calls.items():
        with torch_profile(activities=[ProfilerActivity.CPU]) as p:
            f()
        print(f"\n==== torch.profiler, {name} (PGD L-inf, one call), top 20 ops by self CPU time")
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=512, help="images attacked in one batch")
    parser.add_argument("--arch", choices=sorted(SHAPES), default="small_cnn")
    parser.add_argument("--k", type=int, default=10, help="eps values in the grid scenario")
    parser.add_argument("--profile", action="store_true", help="also profile one engine call and one hand loop")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "engine.csv")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be >= 5")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    try:
        import torchattacks as ta
    except ImportError:
        ta = None
        print("torchattacks is not installed (pip install -e '.[bench]'): its rows and ratios are left out")

    channels, side = SHAPES[args.arch]
    torch.manual_seed(0)
    model = build_model(args.arch, in_channels=channels, num_classes=10, image_size=side).eval()
    x = torch.rand(args.batch, channels, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)  # untargeted on the model's own prediction, as the pipeline does

    rows, verdicts = [], []
    for scenario, impls in scenarios(model, x, y, args.k, ta).items():
        outputs, times = time_interleaved(impls, args.repeats)
        med = {name: statistics.median(t) for name, t in times.items()}
        for name in impls:
            diff = (outputs[name].float() - outputs["hand loop"]).abs().max().item()
            rows.append({"scenario": scenario, "implementation": name, "median_s": f"{med[name]:.4f}",
                         "min_s": f"{min(times[name]):.4f}", "ratio_to_hand": f"{med[name] / med['hand loop']:.3f}",
                         "ratio_to_torchattacks": f"{med[name] / med['torchattacks']:.3f}" if ta else "",
                         "max_abs_diff_vs_hand": f"{diff:.3g}", "n_images": args.batch, "arch": args.arch,
                         "threads": args.threads, "repeats": args.repeats})
        # The run's own noise: the spread of the hand loop's timed rounds. A target missed by less than that is
        # not resolved by this run (rerun, or raise --repeats).
        spread = (max(times["hand loop"]) - min(times["hand loop"])) / med["hand loop"]

        def verdict(ratio: float, target: float) -> str:
            if ratio <= target:
                return "ok"
            return "MISSED, within the run's spread" if ratio - target <= spread else "MISSED"
        vs_hand = med["engine"] / med["hand loop"]
        vs_ta = med["engine"] / med["torchattacks"] if ta else float("nan")
        verdicts.append(f"{scenario:<10} engine/hand {vs_hand:.3f} ({verdict(vs_hand, TARGET)}; target <= {TARGET})"
                        "  engine/torchattacks "
                        + (f"{vs_ta:.3f} ({verdict(vs_ta, 1.0)}; target <= 1)" if ta else "n/a (not installed)")
                        + f"  [hand loop spread (max-min)/median {spread:.1%}]")

    print(f"PGD (no random start, {STEPS} steps) on {args.arch}, {args.batch} random {channels}x{side}x{side} "
          f"inputs in one batch, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'scenario':<10} {'implementation':<18} {'median s':>9} {'min s':>8} {'x hand':>7} {'x TA':>7} "
          f"{'max|diff|':>10}")
    for r in rows:
        print(f"{r['scenario']:<10} {r['implementation']:<18} {r['median_s']:>9} {r['min_s']:>8} "
              f"{r['ratio_to_hand']:>7} {r['ratio_to_torchattacks'] or '-':>7} {r['max_abs_diff_vs_hand']:>10}")
    print("targets (engine <= 1.05x hand loop and not slower than torchattacks):")
    for v in verdicts:
        print("  " + v)
    write_rows(rows, args.out)
    if args.profile:
        profile(model, x, y)
    return 0


if __name__ == "__main__":
    sys.exit(main())
