"""Time BIM (SPEC 1 item 3: eps 3/255, step 1/255, 10 steps, no random start) against a hand-written torch loop
and the peers foolbox, torchattacks and ART, on the default model (small_cnn, digits test set, one batch).

    python bench/bench_bim.py [--threads 1] [--repeats 7]

Prints seconds (median of --repeats timed runs after one warm-up, implementations interleaved so that load
drift hits all alike), the ratio to the hand loop and the max |x_adv - x_adv(loop)|; writes bench/out/bim.csv.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests/conftest.py: the same digits model the attack tests use
from tests.conftest import trained_digits_cnn  # noqa: E402

from advpipe.attacks import BIM  # noqa: E402
from report import write_rows  # noqa: E402  (bench/report.py; the script folder is on sys.path)

EPS, STEP, STEPS = 3 / 255, 1 / 255, 10


def hand_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The reference: the shortest correct torch BIM (clip to the eps ball, then to [0,1])."""
    x_adv = x.clone()
    for _ in range(STEPS):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + STEP * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    return x_adv


def implementations(model: torch.nn.Module, n_classes: int, batch: int) -> dict[str, Callable]:
    """name -> f(x, y) returning x_adv as a CPU tensor; each peer configured to the same BIM."""
    import foolbox as fb
    import torchattacks
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    ours, ours_q = BIM(eps=EPS, step_size=STEP, steps=STEPS, quantize=False), BIM(eps=EPS, step_size=STEP, steps=STEPS)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    fb_pgd = fb.attacks.LinfPGD(abs_stepsize=STEP, steps=STEPS, random_start=False)
    ta_pgd = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=STEPS, random_start=False)
    art_clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                                nb_classes=n_classes, clip_values=(0.0, 1.0), device_type="cpu")
    art_pgd = ProjectedGradientDescent(art_clf, norm=np.inf, eps=EPS, eps_step=STEP, max_iter=STEPS,
                                       num_random_init=0, batch_size=batch, verbose=False)
    return {
        "hand loop": lambda x, y: hand_loop(model, x, y),
        # As the pipeline calls it (input checks, no success pass: the stage's own forward pass gives it);
        # then with the success check, and with the 1/255 re-quantisation the config turns on.
        "advpipe BIM": lambda x, y: ours(model, x, y, check_success=False).x_adv,
        "advpipe BIM + success": lambda x, y: ours(model, x, y).x_adv,
        "advpipe BIM (quantize)": lambda x, y: ours_q(model, x, y, check_success=False).x_adv,
        "foolbox LinfPGD": lambda x, y: fb_pgd(fmodel, x, y, epsilons=EPS)[1],
        "torchattacks PGD": lambda x, y: ta_pgd(x, y),
        "ART PGD": lambda x, y: torch.from_numpy(art_pgd.generate(x.numpy(), y=y.numpy())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "bim.csv")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be >= 5")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    model, x, _ = trained_digits_cnn()
    with torch.no_grad():
        y = model(x).argmax(1)  # untargeted on the model's own prediction, as the pipeline does
    impls = implementations(model, 10, len(x))

    outputs = {name: f(x, y) for name, f in impls.items()}  # warm-up, and the adversarials to compare
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(args.repeats):
        for name, f in impls.items():
            t0 = time.perf_counter()
            f(x, y)
            times[name].append(time.perf_counter() - t0)

    loop = statistics.median(times["hand loop"])
    rows = []
    for name in impls:
        med = statistics.median(times[name])
        diff = (outputs[name].float() - outputs["hand loop"]).abs().max().item()
        rows.append({"implementation": name, "median_s": f"{med:.4f}", "min_s": f"{min(times[name]):.4f}",
                     "ratio_to_loop": f"{med / loop:.3f}", "max_abs_diff_vs_loop": f"{diff:.3g}",
                     "n_images": len(x), "threads": args.threads, "repeats": args.repeats})
    print(f"BIM eps 3/255, step 1/255, {STEPS} steps, {len(x)} digits images in one batch, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"{'implementation':<26} {'median s':>9} {'min s':>8} {'x loop':>7} {'max|diff|':>10}")
    for r in rows:
        print(f"{r['implementation']:<26} {r['median_s']:>9} {r['min_s']:>8} {r['ratio_to_loop']:>7} "
              f"{r['max_abs_diff_vs_loop']:>10}")
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
