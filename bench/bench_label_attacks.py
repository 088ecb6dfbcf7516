"""Time SPEC 3's attacks as the label study runs them, configurations of the shared attack engine
(advpipe.labels.study.engine_config -> advpipe.attacks.build_attack: ONE attack over the eps grid, in the
normalised space, Attack.run on pixel batches), against the per-image reference loops of tests/spec3_reference.py
(the originals' batch size 1, one eps at a time), on the first --n-images digits test images, for a category
model and a 64x64-label model (small_cnn + the high-dimensional head), for the study's five attacks (FGSM, BIM
with accumulated gradients, untargeted and targeted, and torchattacks-style PGD) at the paper's settings.

    python bench/bench_label_attacks.py [--threads 1] [--repeats 5] [--n-images 100] [--eps 0.1,0.2] [--batch 500]

The models are freshly initialised (seeded), in eval mode: an attack's time does not depend on training. The
engine is timed without its success pass (x_adv only, the work the reference loops do). Prints seconds (median
of --repeats after one warm-up, the implementations interleaved), the ratio to the per-image loop, and two
differences from the loop's adversarials (normalised space, max over the grid): `max|diff|` of the timed output
(pixels, normalised again: includes the float32 pixel round trip) and `core max|diff|` of the engine's core on the
normalised images themselves (GradientAttack.attack_batch, as the tests compare it; 0 = bit for bit). PGD's random
start is compared only when the whole set is one batch (--batch >= --n-images): the engine draws per batch.
Writes bench/out/label_attacks.csv. Without tests/spec3_reference.py the per-image comparison is dropped (say so,
engine rows only).
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path

import torch

from advpipe.attacks import AttackContext, build_attack, random_targets
from advpipe.attacks.spaces import make_space
from advpipe.data import load_split
from advpipe.labels import make_labels
from advpipe.labels.study import SPEC3_ATTACKS, SPEC3_TARGETS, engine_config
from advpipe.models.cnn import SmallCNN
from advpipe.models.label_heads import wrap_label_model
from advpipe.runtime import derive_seed
from report import time_interleaved, write_rows  # noqa: E402  (bench/report.py; the script folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "spec3_reference.py"
# The paper's SPEC 3 attack settings (config/paper/labels.yaml), the eps grid from --eps.
SETTINGS = {"bim_steps": 5, "accumulate_gradients": True, "pgd_alpha": "2/255", "pgd_steps": 4, "pgd_clamp": True}
SEED = 0  # the engine's PGD streams: derive_seed(SEED, eps) per eps


def load_reference():
    """tests/spec3_reference.py imported by path (tests/ is not a package), or None when it is absent."""
    if not REFERENCE.exists():
        return None
    spec = importlib.util.spec_from_file_location("spec3_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def models() -> dict[str, tuple[torch.nn.Module, torch.Tensor | None]]:
    torch.manual_seed(0)
    category = SmallCNN(1, 10, 8, mean=[0.3], std=[0.35]).eval()
    torch.manual_seed(0)
    labels = torch.from_numpy(make_labels("composite", 10, 0))
    composite = wrap_label_model(SmallCNN(1, 10, 8, mean=[0.3], std=[0.35]), labels).eval()
    return {"category": (category, None), "composite 64x64": (composite, composite.labels)}


def reference_loop(ref, model, z, y, targets, labels, attack: str, grid: list[float]):
    """The per-image loops over the grid (K, N, ...): not attacked at eps 0, as the originals; PGD's start noise
    drawn beforehand, as the engine draws it for one batch (one generator per eps, over the whole tensor)."""
    noise = {eps: ref.pgd_start_noise(z, eps, torch.Generator().manual_seed(derive_seed(SEED, eps)))
             for eps in grid} if attack == "pgd" else {}
    kw = ({"steps": SETTINGS["bim_steps"], "accumulate": SETTINGS["accumulate_gradients"]} if attack.startswith("bim")
          else {"alpha": 2 / 255, "steps": SETTINGS["pgd_steps"], "clamp01": SETTINGS["pgd_clamp"]}
          if attack == "pgd" else {})
    return lambda: torch.stack([z if eps == 0 else ref.adversarial(model, z, y, eps, attack, labels, targets,
                                                                    noise.get(eps), **kw) for eps in grid])


def engine_core(attack, model, z, classes) -> torch.Tensor:
    """The engine's own iterates on the normalised images (K, N, ...), no pixel round trip."""
    ctx = AttackContext(model, make_space("normalized", model))
    with torch.enable_grad():
        return attack.attack_batch(ctx, z, classes, attack.make_generators(z.device))[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-images", type=int, default=100,
                        help="the first N digits test images (at most 540); the loops take ~0.15 s an image a round")
    parser.add_argument("--eps", default="0.1,0.2", help="the eps grid (normalised space), comma-separated")
    parser.add_argument("--batch", type=int, default=500, help="the engine's batch size (the study's: 500)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "label_attacks.csv")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be >= 5")
    torch.set_num_threads(args.threads)
    grid = [float(e) for e in args.eps.split(",")]
    ref = load_reference()
    if ref is None:
        print(f"{REFERENCE.relative_to(ROOT)} not found: per-image comparison dropped, engine rows only")
    test = load_split({"source": "digits", "test_fraction": 0.3}, "test", "data", 0)
    x, y = test.x[:args.n_images], test.y[:args.n_images]
    targets = random_targets(y, 10, SPEC3_TARGETS["seed"], SPEC3_TARGETS["skip"])

    rows = []
    for model_name, (model, labels) in models().items():
        z = model.normalize(x)
        for name in SPEC3_ATTACKS:
            attack = build_attack({**engine_config(name, {"eps": grid, **SETTINGS}), "seed": SEED})
            classes = targets if name.endswith("_targeted") else y
            impls = {f"engine batch {args.batch}": lambda: attack.run(
                model, x, y, batch_size=args.batch, progress=False, check_success=False).x_adv}
            if ref is not None:
                impls = {"per-image loop": reference_loop(ref, model, z, y, targets, labels, name, grid), **impls}
            outputs, times = time_interleaved(impls, args.repeats)
            core = engine_core(attack, model, z, classes)
            loop = statistics.median(times["per-image loop"]) if ref is not None else None
            for impl in impls:
                med = statistics.median(times[impl])
                diff = core_diff = ""
                if ref is not None:
                    expected = outputs["per-image loop"]
                    diff = f"{(model.normalize(outputs[impl]) - expected).abs().max():.3g}" \
                        if impl != "per-image loop" else "0"
                    core_diff = f"{(core - expected).abs().max():.3g}" if impl != "per-image loop" else ""
                rows.append({"model": model_name, "attack": name, "implementation": impl,
                             "median_s": f"{med:.4f}", "ratio_to_loop": f"{med / loop:.4f}" if loop else "",
                             "max_abs_diff_vs_loop": diff, "core_max_abs_diff_vs_loop": core_diff,
                             "n_images": len(y), "eps": args.eps, "threads": args.threads, "repeats": args.repeats})

    print(f"SPEC 3 attacks through the engine, eps grid {grid} (normalised), {len(y)} digits images, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"{'model':<16} {'attack':<13} {'implementation':<18} {'median s':>9} {'x loop':>7} {'max|diff|':>10} "
          f"{'core max|diff|':>14}")
    for r in rows:
        print(f"{r['model']:<16} {r['attack']:<13} {r['implementation']:<18} {r['median_s']:>9} "
              f"{r['ratio_to_loop'] or '-':>7} {r['max_abs_diff_vs_loop'] or '-':>10} "
              f"{r['core_max_abs_diff_vs_loop'] or '-':>14}")
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
