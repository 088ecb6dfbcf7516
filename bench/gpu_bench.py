"""GPU benchmark (issue 17, "the GPU path"): the attack engine against torchattacks on one GPU, and the ARA and one
training epoch on the GPU against the same code on the CPU. Run through bench/gpu.sh (at most 8 minutes on one GPU);
writes bench/out/gpu.md (a markdown report) and prints it.

    python bench/gpu_bench.py [--budget 420] [--device auto] [--cpu-threads N] [--out bench/out/gpu.md]
    python bench/gpu_bench.py --quick      # tiny sizes on the CPU: checks the script, times nothing of interest

What is timed (every model freshly initialised from a seed, in eval mode for attacks and ARA: a step costs the same
whatever the weights, so nothing is trained first; inputs are uniform random CIFAR-sized images 3x32x32):
- attacks: FGSM (eps 8/255), PGD L-inf (eps 8/255, step 2/255, 10 steps, no random start) and C&W L2 (one c = 1,
  lr 0.01, 100 iterations) of the engine (advpipe.attacks, called as the pipeline calls it, without the success
  pass) against torchattacks' FGSM, PGD and CW (the drift stage's matched settings) on the same model
  (bench/bench_engine.py's cifar_resnet, ResNet-32) and the same 1000 images in one batch; ratio engine/torchattacks.
  torchattacks' CW stops early when its loss rises; the forward passes each ran are counted and a per-iteration
  ratio given. The engine on the CPU is timed on a subset and scaled, for its GPU speedup.
- ARA: advpipe.metrics.ara.ara_distances, both modes (Attack ARA: l2min, BTR ARA: btr) as the ara stage runs them,
  with the explanations study's settings (config/paper/explanations.yaml: n 1000, eps 20, 450 steps, momentum 0.9,
  batch 128) on a pre-activation ResNet-44 (random weights) on 1000 random images labelled with the model's own
  prediction. ensure_proper_minimization off (a check after each batch; with random weights it may refuse). CPU:
  one batch of 128 images for a few steps, scaled to 1000 images and 451 evaluations per mode.
- training: one epoch of advpipe.train.train_classifier (the train stage's loop) of torchvision's ResNet-18 with the
  CIFAR stem (tv_resnet18, arch_args as config/paper/direction.yaml's cifar_baseline) on 50,000 random images with
  random labels, its recipe: batch 128, SGD lr 0.01, momentum 0.9, no augmentation. CPU: a few batches, scaled.

Times are wall-clock seconds around torch.cuda.synchronize(), after one warm-up run of each implementation; attacks
take the median of --repeats timed runs, implementations interleaved. seed_everything(0) runs first, as in every
pipeline job: deterministic kernels (warn only) and no cuDNN autotuning. CPU-side times use --cpu-threads threads
(default: all cores). The script stays within --budget seconds: a section that would not fit is measured on part of
its work and scaled (the report says so), or skipped.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from advpipe.attacks import build_attack
from advpipe.metrics.ara import ara_distances
from advpipe.models.registry import build_model
from advpipe.runtime import seed_everything, select_device
from advpipe.train import train_classifier

ROOT = Path(__file__).resolve().parents[1]

EPS, STEP, PGD_STEPS = 8 / 255, 2 / 255, 10
CW_C, CW_LR = 1.0, 0.01
ARA = {"eps": 20.0, "steps": 450, "momentum": 0.9, "batch_size": 128, "n_images": 1000}  # explanations.yaml
TRAIN = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 128, "epochs": 1,
         "augment": {"crop_padding": 0, "hflip": False}}  # direction.yaml cifar_baseline (weight decay: the default)
TRAIN_IMAGES = 50_000

FULL = {"attack_n": 1000, "cw_steps": 100, "attack_cpu_n": 64, "cw_cpu_steps": 20, "ara_n": ARA["n_images"],
        "ara_steps": ARA["steps"], "ara_batch": ARA["batch_size"], "ara_cpu_steps": 8, "train_n": TRAIN_IMAGES,
        "train_batch": TRAIN["batch_size"], "train_cpu_batches": 3, "train_warmup_batches": 10}
QUICK = {"attack_n": 4, "cw_steps": 4, "attack_cpu_n": 2, "cw_cpu_steps": 2, "ara_n": 6, "ara_steps": 3,
         "ara_batch": 4, "ara_cpu_steps": 1, "train_n": 32, "train_batch": 8, "train_cpu_batches": 1,
         "train_warmup_batches": 1, "repeats": 2}


class Clock:
    """Wall time with the device drained before and after (torch.cuda.synchronize on a GPU)."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, f: Callable[[], object]) -> tuple[float, object]:
        self.sync()
        t0 = time.perf_counter()
        out = f()
        self.sync()
        return time.perf_counter() - t0, out


class Budget:
    def __init__(self, seconds: float):
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"


def count_forwards(model: torch.nn.Module, f: Callable[[], object]) -> int:
    """How many forward passes of `model` f() makes: a hook on its head counts them (the engine enters the model
    through forward_normalized, torchattacks through forward; both end in the head)."""
    calls = [0]
    handle = model.head.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        f()
    finally:
        handle.remove()
    return calls[0]


def cifar_inputs(n: int, seed: int, device: torch.device) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(device)


# ---------------------------------------------------------------- attacks

def attack_impls(model, x, y, cw_steps: int, ta) -> dict[str, dict[str, Callable]]:
    """attack -> {"engine": f, "torchattacks": f}, each f() -> adversarial images."""
    engine = {
        "FGSM": build_attack({"method": "fgsm", "eps": EPS, "quantize": False}),
        "PGD": build_attack({"method": "pgd", "eps": EPS, "step_size": STEP, "steps": PGD_STEPS, "random_start": False}),
        "C&W L2": build_attack({"method": "cw", "binary_search_steps": 1, "initial_const": CW_C,
                                "learning_rate": CW_LR, "max_iterations": cw_steps, "abort_early": False}),
    }
    out = {name: {"engine": (lambda a=a: a(model, x, y, check_success=False).x_adv)} for name, a in engine.items()}
    if ta is not None:
        peers = {"FGSM": ta.FGSM(model, eps=EPS),
                 "PGD": ta.PGD(model, eps=EPS, alpha=STEP, steps=PGD_STEPS, random_start=False),
                 "C&W L2": ta.CW(model, c=CW_C, kappa=0, steps=cw_steps, lr=CW_LR)}
        for name, p in peers.items():
            out[name]["torchattacks"] = lambda p=p: p(x, y)
    return out


def bench_attacks(args, sizes, device, clock: Clock, budget: Budget, notes: list[str]) -> list[dict]:
    try:
        import torchattacks as ta
    except ImportError:
        ta = None
        notes.append("torchattacks is not installed: the attack rows have no peer column.")
    torch.manual_seed(0)
    model = build_model("cifar_resnet", in_channels=3, num_classes=10, image_size=32).to(device).eval()
    x = cifar_inputs(sizes["attack_n"], 1, device)
    with torch.no_grad():
        y = model(x).argmax(1)  # untargeted on the model's own prediction, as the pipeline does
    impls = attack_impls(model, x, y, sizes["cw_steps"], ta)
    forwards = {(a, i): count_forwards(model, f) for a, fs in impls.items() for i, f in fs.items()}  # also warm-up
    times: dict[tuple[str, str], list[float]] = {k: [] for k in forwards}
    repeats = sizes.get("repeats", args.repeats)
    for r in range(repeats):
        for a, fs in impls.items():
            for i, f in fs.items():
                times[(a, i)].append(clock.time(f)[0])
        if budget.left() < 0.55 * budget.seconds and r >= 2 and r + 1 < repeats:  # keep time for ARA, training
            repeats = r + 1
            notes.append(f"attacks: median of {repeats} timed runs (the budget stopped further repeats)")
            break
    # The engine on the CPU, on a subset (attack_cpu_n images; C&W with fewer iterations), scaled linearly.
    cpu = torch.device("cpu")
    cpu_model = build_model("cifar_resnet", in_channels=3, num_classes=10, image_size=32)
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    cpu_model.eval()
    xc = x[:sizes["attack_cpu_n"]].cpu()
    with torch.no_grad():
        yc = cpu_model(xc).argmax(1)
    cpu_impls = attack_impls(cpu_model, xc, yc, sizes["cw_cpu_steps"], None)
    cpu_clock = Clock(cpu)
    scale_n = sizes["attack_n"] / sizes["attack_cpu_n"]
    rows = []
    for a in impls:
        f = cpu_impls[a]["engine"]
        f()  # warm-up
        t_cpu = statistics.median(cpu_clock.time(f)[0] for _ in range(2))
        scale = scale_n * (sizes["cw_steps"] / sizes["cw_cpu_steps"] if a == "C&W L2" else 1.0)
        eng = statistics.median(times[(a, "engine")])
        peer = statistics.median(times[(a, "torchattacks")]) if ta is not None else None
        f_eng, f_peer = forwards[(a, "engine")], forwards.get((a, "torchattacks"))
        per_iter = (eng / f_eng) / (peer / f_peer) if peer and f_peer and f_eng else None
        rows.append({"attack": a, "engine_s": eng, "torchattacks_s": peer, "ratio": eng / peer if peer else None,
                     "forwards": f"{f_eng} / {f_peer if f_peer is not None else '-'}", "ratio_per_forward": per_iter,
                     "engine_cpu_s_est": t_cpu * scale, "cpu_measured": f"{sizes['attack_cpu_n']} images"
                     + (f", {sizes['cw_cpu_steps']} iterations" if a == "C&W L2" else ""),
                     "gpu_speedup": t_cpu * scale / eng})
    return rows


# ---------------------------------------------------------------- ARA

def ara_model(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("preact_resnet", in_channels=3, num_classes=10, image_size=32, depth=44, width=16).to(device).eval()


def run_ara(model, x, y, steps: int, batch: int) -> None:
    for mode in ("l2min", "btr"):  # Attack ARA, BTR ARA: the ara stage runs both
        ara_distances(model, x, y, mode=mode, eps=ARA["eps"], steps=steps, momentum=ARA["momentum"],
                      batch_size=batch, progress=False, ensure_proper_minimization=False)


def bench_ara(sizes, device, clock: Clock, budget: Budget, reserve: float, notes: list[str]) -> dict:
    model = ara_model(device)
    n, steps, batch = sizes["ara_n"], sizes["ara_steps"], sizes["ara_batch"]
    x = cifar_inputs(n, 2, device)
    with torch.no_grad():
        y = model(x).argmax(1)
    # warm-up and probe: one batch, a few steps, both modes
    probe_steps = max(1, min(steps, 10))
    run_ara(model, x[:batch], y[:batch], probe_steps, batch)
    t_probe, _ = clock.time(lambda: run_ara(model, x[:batch], y[:batch], probe_steps, batch))
    batches = math.ceil(n / batch)
    est_full = t_probe * (steps + 1) / (probe_steps + 1) * batches
    room = budget.left() - reserve
    if est_full <= room:
        t_gpu, _ = clock.time(lambda: run_ara(model, x, y, steps, batch))
        measured = f"all {n} images"
    else:  # as many whole batches as fit, scaled to n
        k = max(1, min(batches, int(room / max(est_full / batches, 1e-9))))
        t_k, _ = clock.time(lambda: run_ara(model, x[:k * batch], y[:k * batch], steps, batch))
        t_gpu = t_k * n / min(n, k * batch)
        measured = f"{min(n, k * batch)} of {n} images, scaled"
        notes.append(f"ARA on the GPU: {measured} (the full run was estimated at {est_full:.0f} s, over the budget)")
    # CPU: one batch, a few steps, scaled to n images and steps + 1 evaluations
    cpu = torch.device("cpu")
    cpu_model = ara_model(cpu)
    xc, yc = x[:batch].cpu(), y[:batch].cpu()
    cs = sizes["ara_cpu_steps"]
    run_ara(cpu_model, xc[:2], yc[:2], 1, batch)  # warm-up
    t_cpu, _ = Clock(cpu).time(lambda: run_ara(cpu_model, xc, yc, cs, batch))
    t_cpu_full = t_cpu * (steps + 1) / (cs + 1) * n / len(xc)
    return {"gpu_s": t_gpu, "gpu_measured": measured, "cpu_s_est": t_cpu_full,
            "cpu_measured": f"{len(xc)} images, {cs} steps ({cs + 1} evaluations) per mode",
            "speedup": t_cpu_full / t_gpu, "n": n, "steps": steps, "batch": batch}


# ---------------------------------------------------------------- training

def train_model(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("tv_resnet18", in_channels=3, num_classes=10, image_size=32, cifar_stem=True,
                       imagenet_normalize="indirect").to(device)


def train_epoch(model, x, y, batch: int) -> None:
    train_classifier(model, x, y, {**TRAIN, "batch_size": batch}, seed=0, progress=False, log=lambda _: None)


def bench_train(sizes, device, clock: Clock, budget: Budget, notes: list[str]) -> dict:
    n, batch = sizes["train_n"], sizes["train_batch"]
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(n, 3, 32, 32, generator=gen)  # on the CPU, as the train stage holds its split
    y = torch.randint(0, 10, (n,), generator=gen)
    model = train_model(device)
    w = sizes["train_warmup_batches"] * batch
    clock.time(lambda: train_epoch(model, x[:w], y[:w], batch))  # warm-up (cuDNN, allocator)
    t_probe, _ = clock.time(lambda: train_epoch(model, x[:w], y[:w], batch))
    est = t_probe * n / w
    room = budget.left() - 5
    if est <= room:
        t_gpu, _ = clock.time(lambda: train_epoch(model, x, y, batch))
        measured = f"all {n} images"
    else:
        k = max(w, int(room / max(t_probe / w, 1e-9)) // batch * batch)
        t_k, _ = clock.time(lambda: train_epoch(model, x[:k], y[:k], batch))
        t_gpu = t_k * n / k
        measured = f"{k} of {n} images, scaled"
        notes.append(f"training on the GPU: {measured} (a full epoch was estimated at {est:.0f} s, over the budget)")
    cpu = torch.device("cpu")
    cpu_model = train_model(cpu)
    c = sizes["train_cpu_batches"] * batch
    train_epoch(cpu_model, x[:batch], y[:batch], batch)  # warm-up
    t_cpu, _ = Clock(cpu).time(lambda: train_epoch(cpu_model, x[:c], y[:c], batch))
    t_cpu_full = t_cpu * n / c
    return {"gpu_s": t_gpu, "gpu_measured": measured, "cpu_s_est": t_cpu_full,
            "cpu_measured": f"{c} images ({c // batch} batches)", "speedup": t_cpu_full / t_gpu, "n": n, "batch": batch}


# ---------------------------------------------------------------- report

def environment(device: torch.device, cpu_threads: int) -> list[str]:
    lines = [f"- torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
             f"{os.cpu_count()} CPU cores ({cpu_threads} torch threads on the CPU side)"]
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        lines.append(f"- GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, cuDNN "
                     f"{torch.backends.cudnn.version()}; TF32: convolutions {torch.backends.cudnn.allow_tf32}, "
                     f"matmuls {torch.backends.cuda.matmul.allow_tf32} (torch's defaults)")
    else:
        lines.append("- no GPU: the 'GPU' columns are the CPU (--quick or --device cpu); the ratios check the script only")
    lines.append("- seed_everything(0) first, as every pipeline job: deterministic kernels (warn only), no cuDNN autotuning")
    return lines


def write_report(out: Path, args, device, sections: dict, notes: list[str], elapsed: float) -> str:
    md = ["# GPU benchmark (bench/gpu_bench.py)", ""]
    md += [f"Run {time.strftime('%Y-%m-%d %H:%M:%S')}, {'--quick, ' if args.quick else ''}device {device}, "
           f"{elapsed:.0f} s in all (budget {args.budget:.0f} s).", ""]
    md += environment(device, args.cpu_threads) + [""]
    md += ["Models have random (seeded) weights and the inputs are uniform random 3x32x32 images: only time is "
           "measured, and a step costs the same whatever the weights. CPU times marked 'est.' are measured on the "
           "subset named and scaled linearly (images, and steps or iterations).", ""]
    rows = sections.get("attacks")
    if rows:
        md += ["## Attacks: engine vs torchattacks (same model, same inputs, one batch)", "",
               f"cifar_resnet (ResNet-32), {sections['attack_n']} images; FGSM eps 8/255; PGD L-inf eps 8/255, step "
               f"2/255, {PGD_STEPS} steps, no random start; C&W L2 c {CW_C:g}, lr {CW_LR:g}, "
               f"{sections['cw_steps']} iterations (engine: abort_early off; torchattacks stops early when its loss "
               "rises, hence the forward counts and the per-forward ratio). Median of the timed runs.", "",
               "| attack | engine s | torchattacks s | engine / torchattacks | forwards (engine / TA) | ratio per forward "
               "| engine CPU s (est.) | CPU measured on | GPU speedup of the engine |",
               "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            md.append(f"| {r['attack']} | {fmt(r['engine_s'])} | {fmt(r['torchattacks_s'])} | {fmt(r['ratio'])} | "
                      f"{r['forwards']} | {fmt(r['ratio_per_forward'])} | {fmt(r['engine_cpu_s_est'])} | "
                      f"{r['cpu_measured']} | {fmt(r['gpu_speedup'])}x |")
        md.append("")
    elif "attacks_error" in sections:
        md += ["## Attacks", "", f"failed: {sections['attacks_error']}", ""]
    ara = sections.get("ara")
    if ara:
        md += ["## ARA: GPU vs CPU (advpipe.metrics.ara.ara_distances, Attack and BTR modes)", "",
               f"pre-activation ResNet-44 (random weights), n {ara['n']}, eps {ARA['eps']:g}, {ara['steps']} steps, "
               f"momentum {ARA['momentum']}, batch {ara['batch']} (config/paper/explanations.yaml)", "",
               "| GPU s | GPU measured on | CPU s (est.) | CPU measured on | GPU speedup |", "|---|---|---|---|---|",
               f"| {fmt(ara['gpu_s'])} | {ara['gpu_measured']} | {fmt(ara['cpu_s_est'])} | {ara['cpu_measured']} | "
               f"{fmt(ara['speedup'])}x |", ""]
    elif "ara_error" in sections:
        md += ["## ARA", "", f"failed or skipped: {sections['ara_error']}", ""]
    tr = sections.get("train")
    if tr:
        md += ["## Training: one epoch, GPU vs CPU (advpipe.train.train_classifier)", "",
               f"tv_resnet18 with the CIFAR stem (direction.yaml cifar_baseline), {tr['n']} random images, batch "
               f"{tr['batch']}, SGD lr 0.01 momentum 0.9, no augmentation; data held on the CPU and moved per batch, "
               "as the train stage does", "",
               "| GPU s | GPU measured on | CPU s (est.) | CPU measured on | GPU speedup |", "|---|---|---|---|---|",
               f"| {fmt(tr['gpu_s'])} | {tr['gpu_measured']} | {fmt(tr['cpu_s_est'])} | {tr['cpu_measured']} | "
               f"{fmt(tr['speedup'])}x |", ""]
    elif "train_error" in sections:
        md += ["## Training", "", f"failed or skipped: {sections['train_error']}", ""]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    text = "\n".join(md)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes on the CPU (checks the script)")
    parser.add_argument("--device", default=None, help="auto (default: the GPU), cuda or cpu (--quick: cpu)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 420; quick 300)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per attack (median)")
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu.md")
    args = parser.parse_args(argv)
    args.budget = args.budget or (300.0 if args.quick else 420.0)
    budget = Budget(args.budget)
    warnings.filterwarnings("ignore")  # deterministic-mode notices of kernels without a deterministic variant
    seed_everything(0)
    device = select_device(args.device or ("cpu" if args.quick else "auto"))
    if device.type != "cuda" and not args.quick:
        print(f"note: no GPU found (device {device}); timing the CPU against itself")
    torch.set_num_threads(args.cpu_threads)
    sizes = QUICK if args.quick else FULL
    clock = Clock(device)
    sections: dict = {"attack_n": sizes["attack_n"], "cw_steps": sizes["cw_steps"]}
    notes: list[str] = []

    def report() -> str:
        return write_report(args.out, args, device, sections, notes, time.perf_counter() - budget.start)

    steps = [("attacks", lambda: bench_attacks(args, sizes, device, clock, budget, notes)),
             # keep about a third of what is left for training
             ("ara", lambda: bench_ara(sizes, device, clock, budget, reserve=min(120.0, 0.35 * budget.left()),
                                       notes=notes)),
             ("train", lambda: bench_train(sizes, device, clock, budget, notes))]
    for name, f in steps:
        if budget.left() < (2 if args.quick else 20):
            sections[f"{name}_error"] = "skipped: the budget ran out"
            continue
        t0 = time.perf_counter()
        try:
            sections[name] = f()
        except Exception as err:  # a failing section is reported, the others still run
            sections[f"{name}_error"] = f"{type(err).__name__}: {err}"
        print(f"[{name}: {time.perf_counter() - t0:.1f} s, {budget.left():.0f} s of the budget left]", flush=True)
        report()  # written after every section: a run stopped by the timeout keeps what it measured
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(report())
    print(f"wrote {args.out}")
    return 1 if any(k.endswith("_error") for k in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
