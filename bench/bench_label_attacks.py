"""Time SPEC 3's attacks as the label study runs them (batched, `advpipe.attacks.label_attacks`) against the
original's loop over one image at a time (label_representations attack.py: batch size 1), on the 540 digits
test images, for a category model and a 64x64-label model (small_cnn + the high-dimensional head), FGSM and
5-step BIM with accumulated gradients, eps 0.1 in the normalised space.

    python bench/bench_label_attacks.py [--threads 1] [--repeats 5] [--batch 500]

The models are freshly initialised (seeded), in eval mode: the time of an attack does not depend on training.
Prints seconds (median of --repeats after one warm-up, the two implementations interleaved), the ratio to the
per-image loop and max |z_adv - z_adv(loop)|; writes bench/out/label_attacks.csv.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from advpipe.attacks import label_attacks as la
from advpipe.data import load_split
from advpipe.labels import make_labels
from advpipe.models.cnn import SmallCNN
from advpipe.models.label_heads import label_loss, wrap_label_model
from report import time_interleaved, write_rows  # noqa: E402  (bench/report.py; the script folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
EPS = 0.1


def models() -> dict[str, tuple[torch.nn.Module, str, torch.Tensor | None]]:
    torch.manual_seed(0)
    category = SmallCNN(1, 10, 8, mean=[0.3], std=[0.35]).eval()
    torch.manual_seed(0)
    labels = torch.from_numpy(make_labels("composite", 10, 0))
    composite = wrap_label_model(SmallCNN(1, 10, 8, mean=[0.3], std=[0.35]), labels).eval()
    return {"category": (category, "category", None), "composite 64x64": (composite, "composite", labels)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "label_attacks.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    test = load_split({"source": "digits", "test_fraction": 0.3}, "test", "data", 0)

    rows = []
    for model_name, (model, kind, labels) in models().items():
        forward = la.normalized_forward(model)
        loss = label_loss(kind, labels, "per_sample")
        z = model.normalize(test.x)
        for attack in ("fgsm", "bim"):
            fn = (lambda zz, yy: la.fgsm(forward, zz, yy, EPS, loss)) if attack == "fgsm" else \
                 (lambda zz, yy: la.bim(forward, zz, yy, EPS, loss, steps=5))
            impls = {
                "per-image loop": lambda: torch.cat([fn(z[i:i + 1], test.y[i:i + 1]) for i in range(len(z))]),
                f"advpipe batch {args.batch}": lambda: torch.cat(
                    [fn(z[i:i + args.batch], test.y[i:i + args.batch]) for i in range(0, len(z), args.batch)]),
            }
            outputs, times = time_interleaved(impls, args.repeats)
            loop = statistics.median(times["per-image loop"])
            for name in impls:
                med = statistics.median(times[name])
                rows.append({"model": model_name, "attack": attack, "implementation": name,
                             "median_s": f"{med:.4f}", "ratio_to_loop": f"{med / loop:.4f}",
                             "max_abs_diff_vs_loop": f"{(outputs[name] - outputs['per-image loop']).abs().max():.3g}",
                             "n_images": len(z), "threads": args.threads, "repeats": args.repeats})

    print(f"SPEC 3 attacks, eps {EPS:g} (normalised), {len(test.y)} digits images, {args.threads} thread(s), "
          f"median of {args.repeats}")
    print(f"{'model':<16} {'attack':<5} {'implementation':<18} {'median s':>9} {'x loop':>7} {'max|diff|':>10}")
    for r in rows:
        print(f"{r['model']:<16} {r['attack']:<5} {r['implementation']:<18} {r['median_s']:>9} "
              f"{r['ratio_to_loop']:>7} {r['max_abs_diff_vs_loop']:>10}")
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
