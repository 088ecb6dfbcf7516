"""Paper-scale cost model: what each paper config (config/paper/*.yaml) would cost on this CPU, from unit costs
measured here at the papers' true sizes and the job list of Snakemake's own dry run. Checks itself against a
finished default run.

    .venv/bin/python bench/paper_scale.py                       # full: ~10-15 min on 2 cores
    .venv/bin/python bench/paper_scale.py --check-run /tmp/freshrun --cores 16
    .venv/bin/python bench/paper_scale.py --quick --out /tmp/ps.md   # smoke run, under a minute
    .venv/bin/python bench/paper_scale.py --save-units u.json; ... --reuse-units u.json   # measure once, re-price

How: (1) `snakemake -n --cores 2 [--configfile config/paper/<x>.yaml]` in an empty folder lists every job with its
rule, wildcards and threads; (2) bench/paper_scale_model.py turns each job into work items, unit x count, from the
config the job resolves (advpipe.config, advpipe.pipeline.specs): a training job is epochs x batches of its model's
training batch (its real objective) plus its per-epoch validation, an attack job is images x eps x iterations of its
attack's iteration on its network, a projection job one fit of its method at the job's point count, ...; (3) this
script measures each unit once, with the project's library on random weights and synthetic data of the papers'
shapes (time does not depend on the values); (4) the job seconds add up per stage, per study and over the DAG
(list scheduling on 2 and on --cores cores, each job on its own thread count). No GPU here: the GPU column is not
measurable, only the originals' own README times are shown beside.

Writes a markdown report (--out, default bench/out/paper_scale.md) and prints it.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import paper_scale_model as psm  # noqa: E402

PAPER_CONFIGS = ["vrapi", "explanations", "explanations_prebuilt", "labels", "lesci", "direction"]

# The originals' own run times where their READMEs give them (SPEC.md), on their GPU machines.
ORIGINAL_TIMES = {
    "vrapi": {"_machine": "TITAN RTX + Ryzen CPU (vrapi README)", "_total": "about 20 h",
              "train": "50 min", "attack": "7 h", "projection": "10 h", "score": "1.5 h", "figures": "35 min"},
    "explanations": {"_machine": "one GPU (wwoods README)", "_total": "not given (training: \"up to several days\")",
                     "ara": "30 min per network (2 h for 4)", "train": "up to several days (SPEC 2 (c))"},
    "explanations_prebuilt": {"_machine": "one GPU (wwoods README)", "_total": "not given",
                              "ara": "30 min per network (2 h for 4)"},
    "labels": {"_machine": "-", "_total": "not given"},
    "lesci": {"_machine": "-", "_total": "not given"},
    "direction": {"_machine": "-", "_total": "not given (Spheres at full size: \"hours\", SPEC 5 (c))"},
}
# Stages as the originals name them (vrapi's README), else the rule.
STAGES = {"project": "projection", "project_oos": "projection", "plot": "figures"}

# The papers' datasets (torchvision sets and Tiny ImageNet are not on this machine): shape, classes, train, test.
PAPER_DATA = {
    "cifar10": ((3, 32, 32), 10, 50000, 10000),
    "cifar100": ((3, 32, 32), 100, 50000, 10000),
    "mnist": ((1, 28, 28), 10, 60000, 10000),
    "tinyimagenet": ((3, 64, 64), 200, 100000, 10000),
}
MNIST_PER_CLASS = ([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                   [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


def log(msg: str) -> None:
    print(f"[paper_scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- dry runs ----------------------------------------------------------------------------------------------------

def dry_run(config: str | None, workdir: Path, snakefile: Path = ROOT / "Snakefile",
            threads: int | None = None) -> str:
    """`snakemake -n --cores 2` of a paper config (None: the embedded default) in an empty folder (`threads`: with
    `--config threads=N`); missing inputs that a user provides (the imported published checkpoints) are stood in for
    by empty files there, then it is rerun."""
    workdir.mkdir(parents=True, exist_ok=True)
    if config:  # imported checkpoints the config names: empty stand-ins, so that the DAG builds
        import advpipe.config

        for entry in advpipe.config.read(ROOT / "config" / "paper" / f"{config}.yaml").get("models", {}).values():
            if isinstance(entry, dict) and entry.get("checkpoint"):
                for name in ("model.pt", "model.json"):
                    (workdir / entry["checkpoint"] / name).parent.mkdir(parents=True, exist_ok=True)
                    (workdir / entry["checkpoint"] / name).touch()
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--snakefile", str(snakefile),
           "--directory", str(workdir)]
    if threads:
        cmd += ["--config", f"threads={threads}"]
    if config:
        cmd += ["--configfile", str(ROOT / "config" / "paper" / f"{config}.yaml")]
    for _ in range(12):
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        text = out.stdout + out.stderr
        if out.returncode == 0:
            return text
        missing = re.findall(r"affected files:\n((?:\s{8}\S.*\n?)+)", text)
        files = [f.strip() for block in missing for f in block.splitlines() if f.strip()]
        if "MissingInputException" not in text or not files:
            raise RuntimeError(f"dry run of {config or 'the default'} failed:\n{text[-3000:]}")
        for f in files:
            path = workdir / f
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    raise RuntimeError(f"dry run of {config}: inputs still missing")


# ---- datasets ----------------------------------------------------------------------------------------------------

def dataset_facts(cfg: Mapping[str, Any]) -> dict[str, psm.DatasetFacts]:
    from advpipe.data import synthetic
    from advpipe.data.datasets import load_split

    facts = {}
    for name, ds in cfg["datasets"].items():
        source = ds["source"]
        if source in PAPER_DATA:
            shape, classes, train, test = PAPER_DATA[source]
            subset = ds.get("subset_classes")
            if subset:
                if source == "mnist" and all(isinstance(c, int) for c in subset):
                    train = sum(MNIST_PER_CLASS[0][c] for c in subset)
                    test = sum(MNIST_PER_CLASS[1][c] for c in subset)
                else:
                    train, test = train * len(subset) // classes, test * len(subset) // classes
                classes = len(subset)
            facts[name] = psm.DatasetFacts(tuple(shape), classes, train, test)
        elif source == "spheres":
            dim, _ = synthetic.sphere_params(ds)
            facts[name] = psm.DatasetFacts((dim,), 2, synthetic.split_size(ds, "train"),
                                           synthetic.split_size(ds, "test"), synthetic.split_size(ds, "validation"),
                                           fresh=True)
        elif source in ("squares", "square32"):
            side = 224 if source == "squares" else 32
            facts[name] = psm.DatasetFacts((1, side, side), 2, synthetic.split_size(ds, "train"),
                                           synthetic.split_size(ds, "test"), synthetic.split_size(ds, "validation"))
        else:  # digits and other small local sources: read them
            train = load_split(ds, "train", cfg["data_root"], cfg["seed"])
            test = load_split(ds, "test", cfg["data_root"], cfg["seed"])
            facts[name] = psm.DatasetFacts(tuple(train.x.shape[1:]), len(train.classes), len(train), len(test))
    return facts


# ---- measuring units ---------------------------------------------------------------------------------------------

class Timer:
    """Unit measurements with an adaptive batch: a probe on a few samples, then a timed run sized to take about
    `target` seconds (never more samples than the job's batch)."""

    def __init__(self, quick: bool, max_threads: int = 1):
        self.quick = quick
        self.max_threads = max_threads  # units of jobs with more threads are measured at this many
        self.target = 0.05 if quick else 1.0
        self.train_target = 0.1 if quick else 3.0  # the three networks SPEC 1-3 train: always their whole batch
        self.notes: dict[str, str] = {}

    def sized(self, run: Callable[[int], float], batch: int, probe: int = 4,
              target: float | None = None) -> tuple[float, int]:
        """(seconds per sample, samples timed) of run(b) -> seconds for b samples."""
        target = self.target if target is None else target
        probe = max(1, min(probe, batch))
        run(probe)  # warm-up (allocations, lazy init)
        per = run(probe) / probe
        b = max(probe, min(batch, int(target / max(per, 1e-9))))
        if b == probe:
            return per, b
        t = run(b)
        if not self.quick and t < 0.5:  # cheap: the best of three (others' jobs on a shared machine only slow it)
            t = min(t, run(b), run(b))
        return t / b, b


def is_primary(net: Mapping[str, Any]) -> bool:
    """SPEC 1-3's networks on CIFAR-10 (ResNet-18, pre-activation ResNet-44, ResNet-32 with its label heads)."""
    return list(net["shape"]) == [3, 32, 32] and net["arch"] in ("resnet18", "preact_resnet", "cifar_resnet")


def primary_target(net: Mapping[str, Any], timer: "Timer") -> float | None:
    """A longer timed run (bigger batches) for the networks the papers' main numbers rest on."""
    return 4.0 if is_primary(net) and not timer.quick else None


def set_threads(n: int) -> None:
    from advpipe.runtime import set_threads as advpipe_threads

    advpipe_threads(n)


def build_net(net: Mapping[str, Any]):
    import torch

    from advpipe.models.checkpoint import build_from_spec

    shape = list(net["shape"])
    vector = len(shape) == 1
    spec = {"arch": net["arch"], "arch_args": dict(net["arch_args"]), "in_channels": 1 if vector else shape[0],
            "image_size": None if vector else shape[-1], "num_classes": net["num_classes"],
            "classes": [str(i) for i in range(net["num_classes"])], "mean": None, "std": None,
            "input_shape": shape, "one_logit": net["one_logit"]}
    if "label" in net:
        spec["label"] = {"kind": "random", "shape": net["label"]}
    torch.manual_seed(0)
    model = build_from_spec(spec)
    if "label" in net:
        model.labels.copy_(torch.rand_like(model.labels) * 80)
    return model.eval()


def batch_data(net: Mapping[str, Any], n: int, model=None):
    """Random inputs of the net's shape, and labels: the model's own predictions (every image starts correctly
    classified, as the attacked images do), or random classes."""
    import torch

    g = torch.Generator().manual_seed(n)
    x = torch.rand(n, *net["shape"], generator=g)
    if model is not None:
        with torch.no_grad():
            y = model(x).argmax(1)
    else:
        y = torch.randint(0, net["num_classes"], (n,), generator=g)
    return x, y


def measure_fwd(spec, timer: Timer) -> dict[str, float]:
    import torch

    set_threads(min(spec["threads"], timer.max_threads))
    model = build_net(spec["net"])

    def run(b):
        x, _ = batch_data(spec["net"], b)
        t = time.perf_counter()
        with torch.no_grad():
            model.forward_features(x)
        return time.perf_counter() - t

    per, b = timer.sized(run, spec["batch"], probe=8, target=primary_target(spec["net"], timer))
    return {"value": per, "note": f"forward, {b} samples timed (job batch {spec['batch']})"}


def _reduced_attack(attack: Mapping[str, Any], engine: str, k: int) -> dict[str, Any]:
    a = {key: v for key, v in attack.items() if key not in ("subset", "images", "batch_size", "name")}
    eps = a.get("eps")
    if isinstance(eps, list):
        a["eps"] = [eps[len(eps) // 2]]  # one eps of the grid, still a grid (the engine decodes grids per eps)
    if engine == "pgd":
        a["steps"] = k
    elif engine == "cw":
        a.update(binary_search_steps=1, max_iterations=k, abort_early=False)
    elif engine == "square":
        a.update(n_queries=k, eps=1e-6)  # nothing fooled: every query runs
    elif engine == "search":
        a["steps"] = k
        a["ensure_proper_minimization"] = False
    return a


def measure_attack(spec, timer: Timer) -> dict[str, float]:
    """Per-sample overhead (iter0) and per-iteration cost (iter1) of an attack engine class on a network: the real
    engine at two reduced iteration counts, a line through them. Outcomes are not stored (store=False: the
    adversarials' decoding, a copy, is left out). An attack entry that fails on the network is replaced by a plain
    PGD of the same engine class, and the note says why."""
    from advpipe.pipeline.attack import configured_attack

    set_threads(min(spec["threads"], timer.max_threads))
    model = build_net(spec["net"])
    engine = spec["engine"]
    ks = [1] if engine == "fgsm" else ([5, 15] if engine == "square" else [1, 3])
    if timer.quick:
        ks = ks[:1] if engine == "fgsm" else [1, 2]

    def timed(entry, k):
        attack = configured_attack("probe", _reduced_attack(entry, engine, k), "0/probe")

        def run(b):
            x, y = batch_data(spec["net"], b, model)
            t = time.perf_counter()
            attack.run(model, x, y, batch_size=b, progress=False, store=False)
            return time.perf_counter() - t
        return run

    entry, why = spec["attack"], ""
    try:
        per_probe, b = timer.sized(timed(entry, ks[-1]), spec["batch"], probe=4,
                                   target=primary_target(spec["net"], timer))
    except Exception as err:  # e.g. a one-logit loss on a 10-class net: price the class with a plain attack
        why = f"; the config's entry failed here ({type(err).__name__}: {str(err)[:120]}), a plain one timed"
        entry = {"method": "pgd" if engine in ("pgd", "fgsm") else engine, "eps": 8 / 255, "steps": 1}
        if engine == "fgsm":
            entry = {"method": "fgsm", "eps": 8 / 255}
        per_probe, b = timer.sized(timed(entry, ks[-1]), spec["batch"], probe=4)
    points = [(ks[-1], per_probe)]
    for k in ks[:-1]:
        points.append((k, timed(entry, k)(b) / b))
    a, slope = psm.linear_fit(points)
    if engine == "fgsm":
        a, slope = 0.0, points[0][1]
    return {"iter0": a, "iter1": slope,
            "note": f"{engine} on {b} samples at {', '.join(str(k) for k, _ in sorted(points))} iterations{why}"}


def measure_search(spec, timer: Timer) -> dict[str, float]:
    """The SPEC 2 perturbation search (ARA, explanations) per sample and step, at 1 and 3 steps."""
    from advpipe.attacks.search import perturbation_search

    set_threads(min(spec["threads"], timer.max_threads))
    model = build_net(spec["net"])

    def timed(k):
        def run(b):
            x, y = batch_data(spec["net"], b, model)
            t = time.perf_counter()
            perturbation_search(model, x, y, eps=20.0, steps=k, momentum=spec["momentum"], mode="l2min",
                                ensure_proper_minimization=False)
            return time.perf_counter() - t
        return run

    ks = [1, 2] if timer.quick else [1, 3]
    per, b = timer.sized(timed(ks[1]), spec["batch"], probe=4, target=primary_target(spec["net"], timer))
    points = [(ks[1] + 1, per), (ks[0] + 1, timed(ks[0])(b) / b)]  # l2min: steps + 1 evaluations
    a, slope = psm.linear_fit(points)
    return {"search0": a, "search1": slope, "note": f"perturbation search (l2min) on {b} samples, 1 and 3 steps"}


def measure_align(spec, timer: Timer) -> dict[str, float]:
    """SPEC 5's alignment per sample: direction_gradient (C backward passes for C classes), a forward pass and the
    zero-gradient check. Above 20 classes it is timed with 10- and 20-class heads on the same body and extrapolated
    linearly in C (Tiny ImageNet's 200 classes would take minutes to time)."""
    import torch

    from advpipe.metrics.alignment import direction_gradient
    from advpipe.pipeline.battery import zero_gradient_mask

    set_threads(min(spec["threads"], timer.max_threads))

    def per_sample(net) -> tuple[float, int]:
        model = build_net(net)

        def run(b):
            x, y = batch_data(net, b, model)
            t = time.perf_counter()
            direction_gradient(model, x, y)
            with torch.no_grad():
                model(x)
            zero_gradient_mask(model, x, y, b)
            return time.perf_counter() - t

        return timer.sized(run, spec["batch"], probe=4, target=primary_target(net, timer))

    classes = spec["net"]["num_classes"]
    if classes <= 20:
        per, b = per_sample(spec["net"])
        return {"value": per, "note": f"direction gradient + forward + zero-gradient check on {b} samples"}
    points = []
    for c in (10, 20):
        per, b = per_sample({**spec["net"], "num_classes": c})
        points.append((c, per))
    a, slope = psm.linear_fit(points)
    return {"value": a + slope * classes,
            "note": f"direction gradient etc. timed with 10 and 20 classes on {b} samples, linear in C to {classes}"}


def _objective_steps(spec) -> tuple[str | None, int]:
    """(which knob, its step count) of a training objective that runs an inner attack."""
    obj = spec["objective"]
    if obj.get("alp"):
        return "alp_steps", int(obj.get("alp_steps", 10))
    if obj.get("adversarial_training"):
        return "adv_steps", int(obj.get("adv_steps", 7))
    if spec.get("attack_training"):
        return "attack_steps", int(spec["attack_training"].get("steps") or 10)
    return None, 0


def _build_objective(spec, steps: int | None, num_classes: int):
    import torch

    from advpipe.pipeline.attack import engine_params
    from advpipe.train import build_objective
    from advpipe.train.validation import LabelObjective

    net = spec["net"]
    if spec["label"]:
        if "label" not in net:
            return LabelObjective("category", None)
        return LabelObjective("random", torch.rand(net["num_classes"], *net["label"]) * 80)
    obj = dict(spec["objective"])
    knob, _ = _objective_steps(spec)
    if knob in ("alp_steps", "adv_steps") and steps is not None:
        obj[knob] = steps
    if spec.get("attack_training"):
        attack = dict(spec["attack_training"])
        if steps is not None:
            attack["steps"] = steps
        obj["attack_training"] = engine_params(attack)
    return build_objective(obj, num_classes=num_classes, seed=1)


def measure_train(spec, timer: Timer) -> dict[str, float]:
    """Seconds per training batch at the recipe's batch size, with the model's objective: train_classifier on
    random data, over a few batches after a warm-up; measured on fewer samples than the batch when a batch is slow
    (scaled per sample), and at 1 and 2 inner-attack steps when the objective runs an attack (a line through them to
    its step count). An objective the library cannot run on this network is retried in the nearest form it can (the
    note says which and why)."""
    try:
        return _measure_train(spec, timer, freeze_bn=False)
    except Exception as err:
        msg = f"{type(err).__name__}: {str(err)[:140]}"
        if "loss 'logit'" in str(err) and spec.get("attack_training"):
            fixed = {**spec, "attack_training": {**spec["attack_training"], "loss": "ce"}}
            out = _measure_train(fixed, timer, freeze_bn=False)
            out["note"] += (f"; its training attack fails on this {spec['net']['num_classes']}-class net ({msg}): "
                            "timed with CE loss")
            return out
        if "inplace operation" in str(err):
            out = _measure_train(spec, timer, freeze_bn=True)
            out["note"] += f"; fails with BatchNorm training ({msg}): timed with BatchNorm frozen"
            return out
        raise


def _measure_train(spec, timer: Timer, freeze_bn: bool) -> dict[str, float]:
    import torch

    from advpipe.train import train_classifier

    set_threads(min(spec["threads"], timer.max_threads))
    net = spec["net"]
    recipe = {"epochs": 1, "batch_size": spec["recipe"]["batch_size"], "optimizer": spec["recipe"]["optimizer"],
              "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "augment": spec["recipe"]["augment"]}
    bs = recipe["batch_size"]
    knob, full_steps = _objective_steps(spec)
    cosine = bool(spec["objective"].get("cosine_penalty"))

    def run(steps, b, batches=1) -> float:
        """Seconds per batch of b samples, over `batches` batches of one train_classifier call."""
        model = build_net(net).train()
        if freeze_bn:
            model.freeze_batchnorm()
        objective = _build_objective(spec, steps, net["num_classes"])
        n = b * batches
        x, y = batch_data(net, n)
        extras = None
        if cosine:
            extras = ({"dx": torch.randn_like(x)} if net["one_logit"]
                      else {"dx_all": torch.randn(n, net["num_classes"], *net["shape"])})
        t = time.perf_counter()
        train_classifier(model, x, y, {**recipe, "batch_size": b}, seed=0, objective=objective,
                         log=lambda *_: None, progress=False, extras=extras)
        return (time.perf_counter() - t) / batches

    # SPEC 1-3's networks on CIFAR-10 (ResNet-18, pre-activation ResNet-44, ResNet-32): whole batches of the paper's
    # size are timed; other networks on as many samples as fit in the target time, scaled per sample
    primary = is_primary(net)
    steps0 = 1 if knob and full_steps > 2 else None
    probe = min(bs, 2)
    run(steps0, probe)  # warm-up
    per_sample = run(steps0, probe) / probe
    b = bs if (primary and not timer.quick) or per_sample * bs <= timer.train_target \
        else max(probe, int(timer.train_target / per_sample))
    t_one = run(steps0, b)
    batches = max(1, min(5, int(timer.train_target / max(t_one, 1e-9))))
    t1 = run(steps0, b, batches) if batches > 1 else t_one
    if steps0:
        t2 = run(2, b, batches)
        a, slope = psm.linear_fit([(1, t1), (2, t2)])
        per_batch = a + slope * full_steps
        note = f"{batches} batch(es) of {b} of {bs} samples timed, inner attack at 1 and 2 steps -> {full_steps}"
    else:
        per_batch = t1
        note = f"{batches} batch(es) of {b} of {bs} samples timed"
        note += f", inner attack {full_steps} steps" if knob else ""
    return {"value": per_batch * bs / b,
            "note": f"{spec['model_name']}: " + note + ("" if b == bs else " (scaled per sample)")}


def _blobs(n: int, dim: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, dim)) * 3
    labels = rng.integers(0, 10, n)
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def _projection_run(projection: str, n: int, dim: int, attacks: int, options: Mapping[str, Any]) -> float:
    from advpipe.projections import project_many

    clean, _ = _blobs(n, dim, 0)
    advs = [_blobs(n, dim, 1 + i)[0] for i in range(attacks)]
    base = projection.removesuffix("_oos")
    t = time.perf_counter()
    project_many(projection, clean, advs, 0, {base: dict(options)} if options else None)
    return time.perf_counter() - t


def measure_project(spec, timer: Timer) -> dict[str, float]:
    """One projection job's fit: directly at the job's size when small, else at three smaller sizes with a power law
    in n (UMAP and parametric UMAP run with the epochs the full-size fit would get: 500 up to 10,000 points, 200
    above)."""
    set_threads(1)
    projection, n, dim, attacks = spec["projection"], spec["n"], spec["dim"], spec["attacks"]
    options = dict(spec["options"])
    fit_points = n if projection.endswith("_oos") else 2 * n
    base = projection.removesuffix("_oos")
    epochs = 500 if fit_points <= 10_000 else 200
    if base == "umap" and "n_epochs" not in options:
        options["n_epochs"] = epochs
    if base == "parametric_umap" and options.get("epochs") is None:
        options["epochs"] = epochs
    _projection_run(projection, 60, dim, attacks, {**options, "epochs": 2} if base == "parametric_umap" else options)
    direct = 300 if timer.quick else 1500
    if n <= direct or base == "pca":
        t = _projection_run(projection, n, dim, attacks, options)
        return {"value": t, "note": f"measured at the job's {n} clean points"}
    # parametric UMAP: its epochs are most of its time; run a fifth of them and scale up (the kNN graph, a small
    # part, is then counted five times: an upper bound)
    scale, run_options, how = 1, options, ""
    if base == "parametric_umap":
        scale = 5
        run_options = {**options, "epochs": max(1, options["epochs"] // scale)}
        how = f" (at {run_options['epochs']} of {options['epochs']} epochs, x{scale})"
    sizes = [100, 200] if timer.quick else ([400, 800, 1600] if base == "umap" else [250, 500, 1000])
    points = [(s, scale * _projection_run(projection, s, dim, attacks, run_options)) for s in sizes]
    c, p = psm.power_law(points)
    measured = ", ".join(f"{s}: {t:.1f} s" for s, t in points)
    return {"value": c * n ** p, "note": f"power law t = c n^{p:.2f} from n = {measured}{how}; at n = {n}"}


def measure_score_file(spec, timer: Timer) -> dict[str, float]:
    import numpy as np

    from advpipe.io.h5 import read_dump, write_dump
    from advpipe.metrics.pop import pop_score

    n = spec["n"]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "0.h5"
        write_dump(path, {"index": np.arange(n), "clean": rng.normal(size=(n, 2)).astype(np.float32),
                          "adv": rng.normal(size=(n, 2)).astype(np.float32)}, {"seed": 0})
        labels, pred = rng.integers(0, 10, n), rng.integers(0, 10, n)
        times = []
        for _ in range(3 if not timer.quick else 1):
            t = time.perf_counter()
            z = read_dump(path, ["index", "clean", "adv"])
            pop_score(z["clean"], labels, z["adv"], pred)
            times.append(time.perf_counter() - t)
    return {"value": min(times), "note": f"read one projection dump + POP at n = {n}"}


def measure_figure_set(spec, timer: Timer) -> dict[str, float]:
    import numpy as np

    from advpipe.plots.scatter import plot_projection_figures

    n, classes = spec["n"], spec["classes"]
    rng = np.random.default_rng(0)
    names = [f"class{i}" for i in range(classes)]
    with tempfile.TemporaryDirectory() as tmp:
        small = rng.normal(size=(50, 2)).astype(np.float32)
        plot_projection_figures(small, rng.integers(0, classes, 50), small, rng.integers(0, classes, 50), names,
                                Path(tmp) / "warm", approximate=spec["approximate"], dpi=spec["dpi"])
        m = min(n, 300 if timer.quick else 3000)  # exact mode draws one artist per point: linear in n
        z = rng.normal(size=(m, 2)).astype(np.float32)
        labels = rng.integers(0, classes, m)
        t = time.perf_counter()
        plot_projection_figures(z, labels, z + 0.1, labels, names, Path(tmp) / "fig", approximate=spec["approximate"],
                                dpi=spec["dpi"])
        dt = time.perf_counter() - t
    scaled = "" if m == n else f", timed at {m} + {m} and scaled linearly"
    return {"value": dt * n / m,
            "note": f"SPEC 1 figure set (PDF + PNG) of {n} + {n} points, {classes} classes{scaled}"}


def measure_small_figure(spec, timer: Timer) -> dict[str, float]:
    import numpy as np

    from advpipe.plots.curves import plot_accuracy_robustness

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        d = {"Attack": rng.random(1000), "BTR": rng.random(1000)}
        plot_accuracy_robustness(d, 10, "warm", Path(tmp) / "warm")
        t = time.perf_counter()
        plot_accuracy_robustness(d, 10, "probe", Path(tmp) / "fig")
        dt = time.perf_counter() - t
    return {"value": dt, "note": "one A(eps) figure, PDF + PNG"}


def measure_flop(spec, timer: Timer) -> dict[str, float]:
    import torch

    set_threads(timer.max_threads)
    a, b = torch.rand(2048, 512), torch.rand(512, 4096)
    a @ b
    t = time.perf_counter()
    reps = 2 if timer.quick else 10
    for _ in range(reps):
        a @ b
    dt = (time.perf_counter() - t) / reps
    flops = 2 * 2048 * 512 * 4096
    return {"value": dt / flops, "note": f"float32 GEMM, {timer.max_threads} thread(s): {flops / dt / 1e9:.0f} GFLOP/s"}


def measure_cgan_batch(spec, timer: Timer) -> dict[str, float]:
    import torch

    from advpipe.estimate.indirect import train_cgan

    set_threads(min(spec["threads"], timer.max_threads))
    bs = spec["batch"] if not timer.quick else min(spec["batch"], 8)
    x = torch.rand(2 * bs, *spec["shape"])
    y = torch.randint(0, spec["classes"], (2 * bs,))
    kw = dict(z_dim=spec["z_dim"], epochs=1, batch_size=bs, log=lambda *_: None, progress=False)
    train_cgan(x[:bs], y[:bs], spec["classes"], **kw)
    t = time.perf_counter()
    train_cgan(x, y, spec["classes"], **kw)
    return {"value": (time.perf_counter() - t) / 2 * spec["batch"] / bs,
            "note": f"class-conditional GAN: 2 batches of {bs} (D step + G step)"}


def measure_cgan_step(spec, timer: Timer) -> dict[str, float]:
    import torch

    from advpipe.estimate.indirect import project, train_cgan

    set_threads(min(spec["threads"], timer.max_threads))
    x = torch.rand(8, *spec["shape"])
    g, _ = train_cgan(x, torch.randint(0, spec["classes"], (8,)), spec["classes"], z_dim=spec["z_dim"], epochs=1,
                      batch_size=8, log=lambda *_: None, progress=False)
    rows = spec["rows"] if not timer.quick else min(spec["rows"], 20)
    xr = torch.rand(rows, *spec["shape"]) * 2 - 1
    classes = torch.arange(rows) % spec["classes"]
    points = []
    for k in ([2, 6] if not timer.quick else [1, 2]):
        t = time.perf_counter()
        project(g, xr, classes, steps1=k, steps2=0)
        points.append((k, (time.perf_counter() - t) / rows))
    _, slope = psm.linear_fit(points)
    return {"value": slope, "note": f"z projection: Adam step of {rows} (image, class) rows"}


def script_imports(rule: str, root: Path = ROOT) -> str:
    """The top-level imports of the rule's script (workflow_scripts/ of the checkout `root`), as code."""
    script = None
    for smk in (root / "rules").glob("*.smk"):
        m = re.search(rf"^\s*rule {rule}:\n(?:.*\n)*?\s*script:\s*\n\s*\"\.\./workflow_scripts/(\w+)\.py\"",
                      smk.read_text(), re.M)
        if m:
            script = root / "workflow_scripts" / f"{m.group(1)}.py"
            break
    if script is None or not script.exists():
        return ""
    tree = ast.parse(script.read_text())
    return "\n".join(ast.get_source_segment(script.read_text(), node) for node in tree.body
                     if isinstance(node, (ast.Import, ast.ImportFrom)))


# What a job does once before its work, beside its script's top-level imports: libraries its stage imports late
# (torch in most stages, foolbox and torchattacks in drift) and their first use (torch's first backward, the first
# figure saved: backends, fonts). In-process units are timed warm, so this is the only place these costs appear.
TORCH_RULES = {"train", "attack", "represent", "ara", "explain", "alignment", "drift", "estimator_train", "estimate",
               "estimator_similarity", "lesci_activations", "lesci_eval", "lesci_model", "battery_model"}
FIGURE_RULES = {"ara", "explain", "plot", "robustness", "direction_table", "matrix_table", "references", "run_cost",
                "label_attack_table", "label_efficiency", "label_stats", "lesci_grid"}
FIRST_TORCH = ("import torch\nx = torch.rand(8, 3, 16, 16, requires_grad=True)\n"
               "torch.nn.functional.conv2d(x, torch.rand(4, 3, 3, 3)).relu().sum().backward()\n")
FIRST_FIGURE = ("import tempfile, pathlib\nfrom advpipe.plots.figures import new_figure, save_figure\n"
                "fig = new_figure((4, 3)); fig.add_subplot(1, 1, 1).plot([0, 1], [0, 1])\n"
                "save_figure(fig, pathlib.Path(tempfile.mkdtemp()) / 'x', dpi=100, transparent=False)\n")


def startup_code(rule: str, extra: str = "", root: Path = ROOT) -> str:
    code = "import snakemake.script\n" + script_imports(rule, root) + "\n"
    if rule in TORCH_RULES:
        code += FIRST_TORCH
    if rule == "drift":
        code += "import foolbox, torchattacks\n"
    if rule in FIGURE_RULES:
        code += FIRST_FIGURE
    if extra:  # a projection job: its estimator's first tiny fit (numba caches, torch for parametric UMAP)
        options = {extra.removesuffix("_oos"): {"epochs": 1}} if extra.startswith("parametric_umap") else None
        code += ("import numpy as np\nfrom advpipe.projections import project_many\n"
                 f"project_many({extra!r}, np.random.rand(60, 8), [np.random.rand(60, 8)], 0, {options!r})\n")
    return code


def measure_startup(spec, timer: Timer) -> dict[str, float]:
    """A job's fixed cost: a fresh interpreter running what Snakemake's script preamble and the rule's script import,
    plus its stage's late imports and their first use (startup_code). Snakemake's own per-job bookkeeping is not in
    it. One run (two per rule and source would add minutes)."""
    root = Path(spec["source"]) if spec.get("source") else ROOT
    code = startup_code(spec["rule"], spec["extra"], root)
    env = dict(os.environ)
    if root != ROOT:  # that checkout's library, not this one's (the editable install)
        env["PYTHONPATH"] = os.pathsep.join([str(root / "lib")] + [p for p in [env.get("PYTHONPATH")] if p])
    times = []
    for _ in range(1):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env)
        times.append(time.perf_counter() - t)
        if out.returncode != 0:
            raise RuntimeError(f"startup probe of {spec['rule']} failed: {out.stderr[-500:]}")
    parts = ["python + script imports"] + ["torch's first backward"] * (spec["rule"] in TORCH_RULES) \
        + ["foolbox, torchattacks"] * (spec["rule"] == "drift") \
        + ["first figure saved"] * (spec["rule"] in FIGURE_RULES) \
        + [f"first tiny {spec['extra']} fit"] * bool(spec["extra"]) + [f"the code of {root}"] * (root != ROOT)
    return {"value": min(times), "note": " + ".join(parts)}


def measure_png(spec, timer: Timer) -> dict[str, float]:
    import numpy as np

    from advpipe.io.images import save_png

    x = np.random.default_rng(0).random((50, *spec["shape"])).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        save_png(Path(tmp) / "w.png", x[0])
        t = time.perf_counter()
        for i, image in enumerate(x):
            save_png(Path(tmp) / f"{i}.png", image)
        dt = (time.perf_counter() - t) / len(x)
    return {"value": dt, "note": "one image saved as PNG (advpipe.io.images.save_png), mean of 50"}


SNAKEFILE_NOOP = """\
rule all:
    input: expand("out/{i}.txt", i=range(4))

rule noop:
    output: "out/{i}.txt"
    benchmark: "benchmarks/{i}.tsv"
    script: "noop.py"
"""


def measure_snakemake_job(spec, timer: Timer) -> dict[str, float]:
    """Snakemake's own cost of a `script:` job beyond what the startup probes time: a real run of no-op script
    jobs (writing one file), their benchmark seconds minus a bare `python -c "import snakemake.script"`."""
    from advpipe.pipeline.run_cost import read_benchmark

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "Snakefile").write_text(SNAKEFILE_NOOP)
        (tmp / "noop.py").write_text("open(snakemake.output[0], 'w').write('x')\n")
        out = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--quiet", "all"], cwd=tmp,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"no-op snakemake run failed: {out.stderr[-400:]}")
        jobs = sorted(read_benchmark(p)[0] for p in (tmp / "benchmarks").glob("*.tsv"))
    bare = []
    for _ in range(2):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import snakemake.script"], capture_output=True)
        bare.append(time.perf_counter() - t)
    value = max(0.0, jobs[len(jobs) // 2] - min(bare))
    return {"value": value, "note": f"no-op script jobs of a real snakemake run: median {jobs[len(jobs) // 2]:.2f} s "
                                    f"(of {', '.join(f'{j:.2f}' for j in jobs)}) - bare import {min(bare):.2f} s"}


MEASURE = {"png": measure_png, "snakemake_job": measure_snakemake_job, "fwd": measure_fwd, "attack": measure_attack,
           "search": measure_search, "align": measure_align,
           "train": measure_train, "project": measure_project, "score_file": measure_score_file,
           "figure_set": measure_figure_set, "small_figure": measure_small_figure, "flop": measure_flop,
           "cgan_batch": measure_cgan_batch, "cgan_step": measure_cgan_step, "startup": measure_startup}


def measure_all(specs: Mapping[str, dict], timer: Timer, known: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
    """Measure every spec (one measurement per distinct spec) not in `known` ({"units": .., "notes": ..} of an
    earlier run); return ({unit key: seconds}, {unit key: note})."""
    known = known or {"units": {}, "notes": {}}
    units = {k: v for k, v in known["units"].items() if k in specs and v is not None}
    notes = {k: known["notes"].get(k, "") + " (reused)" for k in units}
    groups: dict[str, list[str]] = {}
    for key, spec in specs.items():
        if key not in units:
            groups.setdefault(json.dumps(spec, sort_keys=True, default=str), []).append(key)
    order = sorted(groups.items(), key=lambda kv: (json.loads(kv[0])["kind"] == "startup", kv[1][0]))
    startup_cache = None
    for i, (blob, keys) in enumerate(order):
        spec = json.loads(blob)
        kind = spec["kind"]
        t0 = time.perf_counter()
        if kind == "startup" and timer.quick and startup_cache is not None:
            result = dict(startup_cache, note="quick mode: the first rule's startup for every rule")
        else:
            try:
                result = MEASURE[kind](spec, timer)
            except Exception as err:  # one unit failing leaves its jobs unpriced, named in the report
                log(f"unit {keys[0]}: measurement failed: {type(err).__name__}: {err}")
                for key in keys:
                    notes[key] = f"measurement failed: {type(err).__name__}: {err}"
                continue
            if kind == "startup":
                startup_cache = result
        threads = spec.get("threads")
        if threads and threads > timer.max_threads:
            result["note"] += f"; measured at {timer.max_threads} thread(s), the job has {threads}"
        for key in keys:
            field = key.split(":", 1)[0]
            value = result.get(field, result.get("value"))
            units[key] = value
            notes[key] = result["note"]
        log(f"[{i + 1}/{len(order)}] {keys[0]}: {units[keys[0]]:.4g} s ({time.perf_counter() - t0:.1f} s to measure)")
    return units, notes


# ---- the check against a finished default run --------------------------------------------------------------------

def measured_run(run_dir: Path) -> dict[str, float]:
    """benchmark path (relative to the run folder) -> seconds, of every benchmarks/**/*.tsv."""
    from advpipe.pipeline.run_cost import read_benchmark

    out = {}
    for path in sorted((run_dir / "benchmarks").rglob("*.tsv")):
        out[path.relative_to(run_dir).as_posix()] = read_benchmark(path)[0]
    return out


def run_wall(run_dir: Path, jobs: int) -> float | None:
    """Wall seconds of the run that made all `jobs` jobs, from its Snakemake log ('Elapsed time', or its first and
    last timestamps); None when no log says it finished them."""
    import datetime as dt

    for log_file in sorted((run_dir / ".snakemake" / "log").glob("*.snakemake.log")):
        text = log_file.read_text(errors="replace")
        if f"{jobs} of {jobs} steps (100%) done" not in text:
            continue
        m = re.search(r"Elapsed time: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
        if m:
            return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        stamps = re.findall(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]", text, re.M)
        if len(stamps) >= 2:
            parse = [dt.datetime.strptime(" ".join(s.split()), "%a %b %d %H:%M:%S %Y") for s in (stamps[0], stamps[-1])]
            return (parse[1] - parse[0]).total_seconds()
    return None


def run_accuracies(run_dir: Path) -> dict[str, float]:
    """Test accuracy per model of a finished run (how many images its `images: correct` attacks got)."""
    import pandas as pd

    acc = {}
    for path in (run_dir / "results" / "representations").glob("*/test_eval.csv"):
        acc[path.parent.name] = float(pd.read_csv(path)["accuracy"][0])
    return acc


# ---- the report --------------------------------------------------------------------------------------------------

def study_report(name: str, jobs, pred: psm.Prediction, cores: list[int], threads) -> tuple[str, dict]:
    rows = psm.stage_table(jobs, pred.seconds, cores, STAGES, threads)
    original = ORIGINAL_TIMES.get(name, {})
    total = sum(pred.seconds[j.jobid] for j in jobs)
    walls = {c: psm.dag_wall(jobs, pred.seconds, c, threads) for c in cores}
    table_rows = []
    for r in rows:
        table_rows.append([r["stage"], r["jobs"], psm.hours(r["job_s"])] + [psm.hours(r[f"wall_{c}"]) for c in cores]
                          + [original.get(r["stage"], "")])
    table_rows.append(["**total**", sum(r["jobs"] for r in rows), f"**{psm.hours(total)}**"]
                      + [f"**{psm.hours(walls[c])}** (DAG)" for c in cores] + [original.get("_total", "")])
    header = ["stage", "jobs", "job time (sum)"] + [f"wall, {c} cores" for c in cores] + \
             [f"original ({original.get('_machine', '-')})"]
    text = psm.markdown_table(header, table_rows)
    notes = []
    if pred.unmodelled:
        notes.append("no cost model (fixed cost only): " + ", ".join(f"{k} x{v}" for k, v in pred.unmodelled.items()))
    if pred.missing:
        notes.append("units not measured (their share left out): " + ", ".join(sorted(pred.missing)))
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return text, {"total_s": total, "walls": walls, "rows": rows}


def check_report(jobs, pred: psm.Prediction, measured: Mapping[str, float], threads) -> tuple[str, dict]:
    """Predicted vs measured per rule (summed job seconds) and in total, with the wall time on 2 cores."""
    by_rule: dict[str, list] = {}
    matched_pred = {}
    for j in jobs:
        if j.rule == "all":
            continue
        m = measured.get(j.benchmark) if j.benchmark else None
        row = by_rule.setdefault(j.rule, [0, 0.0, 0.0, 0])
        row[0] += 1
        row[1] += pred.seconds[j.jobid]
        if m is not None:
            row[2] += m
            row[3] += 1
            matched_pred[j.jobid] = m
    rows = []
    for rule, (n, p, m, found) in sorted(by_rule.items(), key=lambda kv: -kv[1][2]):
        ratio = f"{p / m:.2f}" if m > 0 else "-"
        rows.append([rule, n if found == n else f"{n} ({found} measured)", f"{p:.0f}", f"{m:.0f}", ratio])
    p_tot = sum(v[1] for v in by_rule.values())
    m_tot = sum(v[2] for v in by_rule.values())
    rows.append(["**total**", sum(v[0] for v in by_rule.values()), f"**{p_tot:.0f}**", f"**{m_tot:.0f}**",
                 f"**{p_tot / m_tot:.2f}**" if m_tot else "-"])
    measured_seconds = {j.jobid: matched_pred.get(j.jobid, 0.0) for j in jobs}
    wall_pred = psm.dag_wall(jobs, pred.seconds, 2, threads)
    wall_meas = psm.dag_wall(jobs, measured_seconds, 2, threads)
    table = psm.markdown_table(["rule", "jobs", "predicted s (sum)", "measured s (sum)", "predicted / measured"],
                               rows)
    return table, {"pred_total": p_tot, "meas_total": m_tot, "wall_pred": wall_pred, "wall_meas": wall_meas}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=ROOT).stdout.strip()
    except OSError:
        return "?"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: tiny measurements, only the explanations config unless --configs (< 1 min)")
    ap.add_argument("--cores", type=int, default=16, help="the larger machine's core count (default 16)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads of every torch job: passed to the dry runs as --config threads=N, and every unit "
                         "is measured and every job scheduled at it (default: each job's own, as the dry run on 2 "
                         "cores gives them: the config's `threads`, 1 by default)")
    ap.add_argument("--configs", nargs="*", default=None, help=f"paper configs (default: {' '.join(PAPER_CONFIGS)})")
    ap.add_argument("--check-run", type=Path, default=None,
                    help="a finished default run (a clone that ran `make run`): predict its jobs and compare with its "
                         "benchmarks/**/*.tsv")
    ap.add_argument("--accuracy", type=float, default=0.93,
                    help="test accuracy assumed for the paper models (images an `images: correct` attack gets, "
                         "vrapi's points per projection; default 0.93: ~9.3k of CIFAR-10's 10k, SPEC 1 (c))")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "paper_scale.md", help="the report")
    ap.add_argument("--save-units", type=Path, default=None,
                    help="also write the measured units (seconds, notes, what was measured) to this JSON file")
    ap.add_argument("--reuse-units", type=Path, default=None,
                    help="a --save-units file of an earlier run: its units are reused, only missing ones measured")
    ap.add_argument("--measure-threads", type=int, default=1,
                    help="at most this many threads when measuring a unit (default 1: on a shared 2-core machine a "
                         "2-thread measurement stalls whenever the other core is busy; jobs with more threads are "
                         "then priced at their 1-thread cost, an upper bound)")
    args = ap.parse_args(argv)
    import advpipe.config

    started = time.time()
    load_start = os.getloadavg()
    configs = args.configs if args.configs is not None else (["explanations"] if args.quick else PAPER_CONFIGS)
    timer = Timer(args.quick, args.measure_threads)
    cores = [2, args.cores]

    def threads_of(job):
        return args.threads or job.threads

    studies = {}
    with tempfile.TemporaryDirectory(prefix="paper_scale_") as tmp:
        for name in configs:
            log(f"dry run: {name}")
            text = dry_run(name, Path(tmp) / name, threads=args.threads)
            cfg = advpipe.config.load(ROOT / "config" / "paper" / f"{name}.yaml")
            jobs = psm.parse_dry_run(text)
            planner = psm.Planner(cfg, dataset_facts(cfg), default_accuracy=args.accuracy, threads=args.threads)
            psm.plan_units(jobs, planner)
            studies[name] = (jobs, planner)
        check = None
        if args.check_run:
            # the run's own workflow (a clone at the run's commit): its jobs and their threads as they ran
            snakefile = args.check_run / "Snakefile"
            snakefile = snakefile if snakefile.exists() else ROOT / "Snakefile"
            log(f"dry run: the default config (config.yaml) with {snakefile}")
            text = dry_run(None, Path(tmp) / "default", snakefile=snakefile)
            cfg = advpipe.config.load(ROOT / "config.yaml")
            jobs = psm.parse_dry_run(text)
            acc = run_accuracies(args.check_run)
            # the run's own threads per job (the check compares with what ran), whatever --threads says
            planner = psm.Planner(cfg, dataset_facts(cfg), accuracy=acc, default_accuracy=0.95,
                                  source=str(args.check_run) if snakefile != ROOT / "Snakefile" else None)
            psm.plan_units(jobs, planner)
            check = (jobs, planner)
    specs: dict[str, dict] = {}
    for jobs, planner in list(studies.values()) + ([check] if check else []):
        specs.update(planner.specs)
    log(f"{len(specs)} units to measure")
    known = json.loads(args.reuse_units.read_text()) if args.reuse_units else None
    units, notes = measure_all(specs, timer, known)
    if args.save_units:
        args.save_units.parent.mkdir(parents=True, exist_ok=True)
        args.save_units.write_text(json.dumps({"units": units, "notes": notes, "specs": specs}, indent=1,
                                              sort_keys=True, default=str) + "\n")
    measure_s = time.time() - started

    out = [f"# Paper-scale cost model ({'quick smoke run' if args.quick else 'full run'})", ""]
    out.append(f"`bench/paper_scale.py{' --quick' if args.quick else ''} --cores {args.cores}"
               + (f" --threads {args.threads}" if args.threads else "")
               + (f" --check-run {args.check_run}" if args.check_run else "") + "`, "
               f"{time.strftime('%Y-%m-%d %H:%M')}, commit {git_commit()}. Machine: {cpu_name()}, {os.cpu_count()} "
               f"cores; load average {load_start[0]:.1f} when it started and {os.getloadavg()[0]:.1f} when it ended "
               "(a shared machine: other people's jobs ran beside the measurements, so units may read high). "
               f"Measuring took {measure_s / 60:.1f} min.")
    out.append("")
    out.append("Each job's time = its fixed cost (interpreter and imports) + its work items x measured units, from the "
               "job's own rule, wildcards and resolved config; each job runs on the threads its dry run gives it (the "
               "config's `threads` for torch jobs, 1 by default now; `|t1` in a unit's name), units measured at "
               f"min(that, {args.measure_threads}) thread(s). Wall time: list scheduling of the DAG (or of one stage's "
               "jobs alone) on that many cores, each job holding its threads. No GPU here: a GPU column cannot be "
               "measured; the originals' README times (GPU) are beside.")
    summary_rows = []
    for name, (jobs, planner) in studies.items():
        pred = psm.predict(jobs, planner, units)
        text, info = study_report(name, jobs, pred, cores, threads_of)
        original = ORIGINAL_TIMES.get(name, {})
        summary_rows.append([name, len(jobs) - 1, psm.hours(info["total_s"])] +
                            [psm.hours(info["walls"][c]) for c in cores] + [original.get("_total", "")])
        out += ["", f"## {name} (config/paper/{name}.yaml, {len(jobs) - 1} jobs + `all`)", "", text]
    out += ["", "## Summary", "", psm.markdown_table(
        ["paper config", "jobs", "job time (sum)"] + [f"wall, {c} cores" for c in cores] + ["original"], summary_rows)]
    if check:
        jobs, planner = check
        pred = psm.predict(jobs, planner, units)
        measured = measured_run(args.check_run)
        table, info = check_report(jobs, pred, measured, lambda j: j.threads)
        actual = run_wall(args.check_run, len(jobs))
        out += ["", "## Check: the default run (config.yaml) predicted from units at its own sizes vs "
                f"{args.check_run}",
                "", f"Summed job seconds: predicted {info['pred_total']:.0f} s, measured {info['meas_total']:.0f} s "
                f"(ratio {info['pred_total'] / max(info['meas_total'], 1e-9):.2f}). Wall time on 2 cores (the same "
                f"DAG scheduler on both sets of job times): predicted {psm.hours(info['wall_pred'])}, from the "
                "measured "
                f"job times {psm.hours(info['wall_meas'])}"
                + (f"; the run itself took {psm.hours(actual)} (its Snakemake log)" if actual else "") + ".", "",
                "The run's jobs ran two at a time on its 2 cores, its torch jobs on 2 threads each (so up to 4 threads "
                "on 2 cores); the units were measured one at a time and at 1 thread. Its fixed costs are timed on the "
                "run's own checkout (its scripts' imports), the work units with this one's library.", "", table]
    out += ["", "## Units", "", psm.markdown_table(
        ["unit", "seconds", "how"],
        [[f"`{k}`", f"{v:.4g}" if v is not None else "-", notes.get(k, "")] for k, v in sorted(units.items())]
        + [[f"`{k}`", "failed", notes.get(k, "")] for k in sorted(set(specs) - set(units))])]
    out += ["", "## Assumptions and limits", ""] + [f"- {line}" for line in ASSUMPTIONS]
    report = "\n".join(out) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    log(f"wrote {args.out} in {(time.time() - started) / 60:.1f} min")
    return 0


ASSUMPTIONS = [
    "Units are measured one at a time and at 1 thread (--measure-threads): on this shared 2-core machine a 2-thread "
    "measurement stalls whenever another process holds the second core (up to 1000x for small kernels). A job the "
    "config gives more threads is priced at its 1-thread cost, an upper bound (README: 2 threads gave 1.37x). The "
    "paper configs now give every torch job 1 thread (config `threads`); `--threads N --measure-threads N` dry-runs, "
    "measures and schedules them at N.",
    "Units are measured with random weights and random inputs of the papers' shapes: time does not depend on the "
    "values, except where an attack stops early (Square when every image is fooled, C&W with abort_early, foolbox's "
    "line searches and DeepFool): those are priced at their full iteration counts, so their jobs are upper bounds.",
    "A slow batch is timed on fewer samples than the job's batch and scaled per sample (the unit's note says when); "
    "a training objective with an inner attack (adversarial training, ALP, PGD training) is timed at 1 and 2 inner "
    "steps and extrapolated linearly to its step count.",
    "Images attacked under `images: correct` and vrapi's points per projection: test set x --accuracy (0.93 for the "
    "papers; the check uses the run's own accuracies). LESCI's embedding: all training images counted (upper bound).",
    "t-SNE, UMAP and parametric UMAP at full size are too slow to time here: each is fitted at three smaller sizes and "
    "extrapolated with a power law t = c n^p (the note gives the fit); UMAP/parametric UMAP with the epoch count the "
    "full-size fit would use (500 up to 10,000 points, 200 above).",
    "Label models of SPEC 3 with vector labels (lowdim, normal_dim=D, uniform_gap=g) are priced with one "
    "representative head (50 values); the backbone dominates.",
    "A job's fixed cost: a fresh interpreter importing the rule script's modules, its stage's late imports (torch, "
    "foolbox) with their first use (a backward pass, a figure saved), and Snakemake's own share of a script job "
    "(`snakemake_job`: no-op script jobs of a real Snakemake run, beyond the interpreter). Reading a job's input "
    "dumps is not priced except where it is the work (scores).",
    "Rules priced coarsely: vrgan estimator training (3 critic training batches per iteration), cgan training and "
    "projection (measured per batch / per Adam step of the real GAN), drift (3 implementations x its iterations at "
    "the engine's PGD cost), LESCI's kNN and grid (GEMM flops at the measured rate); the rest of the small table and "
    "figure rules are their fixed cost + one figure.",
    "The N-core column keeps every job at its own thread count (what the profile's rules ask for); the DAG wall "
    "time is a list-scheduling estimate, not Snakemake's scheduler. A GPU would change everything but the fixed "
    "costs and the projections; it is not measurable here.",
]


if __name__ == "__main__":
    sys.exit(main())
