"""Bench the t-SNE backends (issue 17): sklearn (vrapi's, the default) against openTSNE (FFT gradients).

1. On a finished run's vrapi dumps: every tsne projection file of results/projections/<model>/<attack>/tsne/
   (vrapi's models, attacks and trials) is refit from the representation and attack dumps with each backend,
   with the file's own seed (config seed + trial, as the pipeline derives it; stored in the file's attrs), and
   scored with POP (advpipe.metrics.pop, as the score rule). Per fit: wall and CPU time. The sklearn fit must
   reproduce the stored projection bit for bit (a check that this is the pipeline's computation).
2. Scaling: one fit per backend on 10 Gaussian blobs of dimension 64 (5k, 10k, 20k points), with the 5-NN
   accuracy of the embedding (5-fold) as a check that both embed the blobs.

Both backends run on one thread (the pipeline's setting) and alternate within a trial, so that a load change
on the machine hits both; timings are comparable as ratios within one run, not across machines or runs.

    python bench/bench_tsne.py [results_dir] [--sizes 5000 10000 20000] [--skip-synthetic]

Writes bench/out/tsne_backends.md (and prints it).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from advpipe.metrics.pop import pop_score
from advpipe.pipeline.project import aligned_adversarial, correct_clean
from advpipe.projections import project

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = {"sklearn": {}, "opentsne": {"tsne": {"backend": "opentsne"}}}


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def tsne_entries(results: Path) -> list[dict]:
    """(model, attack, trial, seed, paths) of every tsne projection file of the run (vrapi's; the matrix uses pca)."""
    entries = []
    for path in sorted(results.glob("projections/*/*/tsne/*.h5")):
        model, attack = path.parts[-4], path.parts[-3]
        with h5py.File(path, "r") as f:
            seed = int(f.attrs["seed"])
        entries.append({"model": model, "attack": attack, "trial": int(path.stem), "seed": seed, "projection": path,
                        "clean": results / "representations" / model / "test.h5",
                        "attack_path": results / "attacks" / model / f"{attack}.h5"})
    if not entries:
        raise SystemExit(f"{results}: no projections/<model>/<attack>/tsne/<trial>.h5; expected a finished vrapi run")
    order = attack_order(results)
    return sorted(entries, key=lambda e: (e["model"], e["trial"], order.get(e["attack"], len(order)), e["attack"]))


def attack_order(results: Path) -> dict[str, int]:
    """The study's order of attacks (vrapi.attacks), as the run's scores.csv lists them; empty without it."""
    scores = results / "scores" / "vrapi" / "scores.csv"
    if not scores.exists():
        return {}
    return {a: i for i, a in enumerate(pd.read_csv(scores, usecols=["attack"]).attack.drop_duplicates())}


def bench_dumps(results: Path, log=print) -> pd.DataFrame:
    rows = []
    for i, e in enumerate(tsne_entries(results)):
        clean = correct_clean(str(e["clean"]))
        adv = aligned_adversarial(str(e["attack_path"]), clean, str(e["clean"]))
        with h5py.File(e["projection"], "r") as f:
            stored = (f["clean"][()], f["adv"][()])
        order = list(BACKENDS) if i % 2 == 0 else list(BACKENDS)[::-1]  # alternate who goes first
        for name in order:
            (cz, az), wall, cpu = timed(lambda: project("tsne", clean["features"], adv["features"], e["seed"],
                                                        BACKENDS[name]))
            rows.append({"model": e["model"], "attack": e["attack"], "trial": e["trial"], "seed": e["seed"],
                         "backend": name, "n_points": len(cz) + len(az), "wall_s": wall, "cpu_s": cpu,
                         "pop": pop_score(cz, clean["label"], az, adv["pred"]),
                         "same_as_stored": bool(np.array_equal(cz, stored[0]) and np.array_equal(az, stored[1]))})
            r = rows[-1]
            log(f"{e['model']} {e['attack']} trial {e['trial']} (seed {e['seed']}) {name}: {r['n_points']} points, "
                f"{wall:.1f} s wall, {cpu:.1f} s CPU, POP {r['pop']:.4f}")
    return pd.DataFrame(rows)


def blobs(n: int, dim: int = 64, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 1.5
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), y


def bench_synthetic(sizes, log=print) -> pd.DataFrame:
    rows = []
    for n in sizes:
        x, y = blobs(n)
        half = n // 2
        for name in BACKENDS:
            (cz, az), wall, cpu = timed(lambda: project("tsne", x[:half], x[half:], 0, BACKENDS[name]))
            z = np.concatenate([cz, az])
            acc = cross_val_score(KNeighborsClassifier(5), z, y, cv=5).mean()
            rows.append({"n_points": n, "backend": name, "wall_s": wall, "cpu_s": cpu, "knn5_accuracy": acc})
            log(f"blobs n={n} {name}: {wall:.1f} s wall, {cpu:.1f} s CPU, 5-NN accuracy {acc:.4f}")
    return pd.DataFrame(rows)


def _f(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}"


def _ranking(means: pd.Series) -> str:
    """'a > b = c': attacks by mean POP, highest first, = for exact ties."""
    ordered = means.sort_values(ascending=False, kind="stable")
    out = str(ordered.index[0])
    for prev, (name, value) in zip(ordered.values, list(ordered.items())[1:]):
        out += (" = " if value == prev else " > ") + str(name)
    return out


def report(dumps: pd.DataFrame, synthetic: pd.DataFrame | None, results: Path) -> str:
    lines = ["# t-SNE backends: sklearn (default) vs openTSNE (`vrapi.projection_options.tsne.backend: opentsne`)", "",
             f"Written by `python bench/bench_tsne.py {results}`. Machine: {platform.machine()}, "
             f"{os.cpu_count()} CPUs shared with other work; every fit on one thread (the pipeline's setting), the "
             "two backends alternating. Timings are comparable as ratios within this run only; CPU time (process "
             "time, one thread) is less disturbed by the other load than wall time.", ""]
    lines += ["## vrapi's tsne on the run's dumps", ""]
    n = dumps.groupby("backend")["n_points"].agg(["min", "max"]).iloc[0]
    trials, seeds = sorted(map(int, dumps.trial.unique())), sorted(map(int, dumps.seed.unique()))
    lines.append(f"{dumps.model.nunique()} model(s) ({', '.join(dumps.model.unique())}), attacks "
                 f"{', '.join(dumps.attack.unique())}, trials {trials} (seeds {seeds}, read from the projection "
                 f"files); {n['min']}-{n['max']} points per joint fit (clean + adversarial).")
    same = dumps[dumps.backend == "sklearn"].same_as_stored
    lines.append(f"The sklearn fits reproduce the run's stored projections bit for bit: {int(same.sum())} of "
                 f"{len(same)}.")
    lines += ["", "### Time per trial (one joint fit)", "",
              "| backend | wall s, mean | wall s, sd | CPU s, mean | CPU s, sd |", "|---|---|---|---|---|"]
    t = dumps.groupby("backend", sort=False)[["wall_s", "cpu_s"]].agg(["mean", "std"])
    for b, r in t.iterrows():
        lines.append(f"| {b} | {_f(r[('wall_s', 'mean')], 2)} | {_f(r[('wall_s', 'std')], 2)} | "
                     f"{_f(r[('cpu_s', 'mean')], 2)} | {_f(r[('cpu_s', 'std')], 2)} |")
    pair = dumps.pivot_table(index=["model", "attack", "trial"], columns="backend", values=["wall_s", "cpu_s"])
    ratio_wall = (pair[("wall_s", "opentsne")] / pair[("wall_s", "sklearn")])
    ratio_cpu = (pair[("cpu_s", "opentsne")] / pair[("cpu_s", "sklearn")])
    lines += ["", f"Ratio openTSNE / sklearn per trial: wall {_f(ratio_wall.mean(), 2)} (range "
              f"{_f(ratio_wall.min(), 2)}-{_f(ratio_wall.max(), 2)}), CPU {_f(ratio_cpu.mean(), 2)} (range "
              f"{_f(ratio_cpu.min(), 2)}-{_f(ratio_cpu.max(), 2)}); above 1: openTSNE is slower."]

    lines += ["", "### POP per attack (mean and sd over trials, ddof=1 as score_stats)", "",
              "| model | attack | sklearn mean | sklearn sd | openTSNE mean | openTSNE sd | |difference| | "
              "within the larger sd |", "|---|---|---|---|---|---|---|---|"]
    s = dumps.groupby(["model", "attack", "backend"], sort=False)["pop"].agg(["mean", "std"]).fillna(0.0)
    verdicts = []
    for (model, attack) in dumps[["model", "attack"]].drop_duplicates().itertuples(index=False):
        sk, ot = s.loc[(model, attack, "sklearn")], s.loc[(model, attack, "opentsne")]
        diff = abs(ot["mean"] - sk["mean"])
        within = diff <= max(sk["std"], ot["std"])
        verdicts.append(within)
        lines.append(f"| {model} | {attack} | {_f(sk['mean'])} | {_f(sk['std'])} | {_f(ot['mean'])} | "
                     f"{_f(ot['std'])} | {_f(diff)} | {'yes' if within else 'no'} |")
    lines.append("")
    for model in dumps.model.unique():
        means = {b: s.loc[model].xs(b, level="backend")["mean"] for b in BACKENDS}
        attacks = list(means["sklearn"].index)
        pairs = [(a, c) for i, a in enumerate(attacks) for c in attacks[i + 1:]]
        signs = {b: {p: np.sign(means[b][p[0]] - means[b][p[1]]) for p in pairs} for b in BACKENDS}
        reversed_ = [p for p in pairs if signs["sklearn"][p] * signs["opentsne"][p] < 0]
        tied = [p for p in pairs if signs["sklearn"][p] != signs["opentsne"][p] and p not in reversed_]
        verdict = ("the same order" if not reversed_ and not tied else
                   "the same order up to ties (" + ", ".join(f"{a}/{c}" for a, c in tied) + ")" if not reversed_ else
                   "a different order (" + ", ".join(f"{a}/{c}" for a, c in reversed_) + " swapped)")
        lines.append(f"{model}: attacks by mean POP, highest first: sklearn {_ranking(means['sklearn'])}; openTSNE "
                     f"{_ranking(means['opentsne'])}: {verdict}.")
    lines.append(f"|POP difference| within the trial-to-trial sd: {sum(verdicts)} of {len(verdicts)} attacks.")
    for (model, attack) in dumps[["model", "attack"]].drop_duplicates().itertuples(index=False):
        path = Path(results) / "attacks" / model / f"{attack}.h5"
        if path.exists():
            with h5py.File(path, "r") as f:
                success = f["success"][()]
            lines.append(f"- {model} {attack}: {int(success.sum())} of {len(success)} attacks succeeded"
                         + (" (a failed attack leaves a representation next to its clean twin, whose label is the prediction: "
                            "POP near 1 whatever the projection, so this attack cannot tell the backends apart)"
                            if success.mean() < 0.05 else "") + ".")
    lines += ["", "### Every fit", "", "| model | attack | trial | seed | backend | points | wall s | CPU s | POP |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in dumps.itertuples(index=False):
        lines.append(f"| {r.model} | {r.attack} | {r.trial} | {r.seed} | {r.backend} | {r.n_points} | "
                     f"{_f(r.wall_s, 2)} | {_f(r.cpu_s, 2)} | {_f(r.pop)} |")

    if synthetic is not None and len(synthetic):
        lines += ["", "## Scaling: 10 Gaussian blobs, dimension 64, one fit per size", "",
                  "| points | sklearn wall s | sklearn CPU s | openTSNE wall s | openTSNE CPU s | CPU ratio "
                  "openTSNE/sklearn | sklearn 5-NN acc | openTSNE 5-NN acc |", "|---|---|---|---|---|---|---|---|"]
        for n, g in synthetic.groupby("n_points"):
            sk, ot = g[g.backend == "sklearn"].iloc[0], g[g.backend == "opentsne"].iloc[0]
            lines.append(f"| {n} | {_f(sk.wall_s, 1)} | {_f(sk.cpu_s, 1)} | {_f(ot.wall_s, 1)} | {_f(ot.cpu_s, 1)} | "
                         f"{_f(ot.cpu_s / sk.cpu_s, 2)} | {_f(sk.knn5_accuracy)} | {_f(ot.knn5_accuracy)} |")
        faster = [int(n) for n, g in synthetic.groupby("n_points")
                  if g[g.backend == "opentsne"].cpu_s.iloc[0] < g[g.backend == "sklearn"].cpu_s.iloc[0]]
        lines += ["", "openTSNE needs less CPU time than sklearn at: "
                  + (", ".join(f"{n} points" for n in faster) if faster else "none of these sizes") + "."]
    lines += ["", "Why the cost moves with N: openTSNE's FFT gradient pays per iteration for an interpolation grid "
              "whose size follows the extent of the embedding (at least 50 intervals of 3 points per axis, FFTs done "
              "by numpy in the PyPI wheel, no FFTW), plus O(N) for the points; sklearn's Barnes-Hut pays O(N log N). "
              "vrapi at paper scale fits about 18k points per joint t-SNE (9k clean + 9k adversarial test images)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=ROOT / "results",
                        help="results folder of a finished run (default: the project's results/)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[5000, 10000, 20000])
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "tsne_backends.md")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the table from the measurements saved beside it (the two CSVs), fitting nothing")
    args = parser.parse_args()
    raw = {"dumps": args.out.with_name("tsne_backends_dumps.csv"),  # the raw rows, beside the table
           "scaling": args.out.with_name("tsne_backends_scaling.csv")}
    if args.report_only:
        dumps = pd.read_csv(raw["dumps"])
        synthetic = pd.read_csv(raw["scaling"]) if raw["scaling"].exists() else None
    else:
        with threadpool_limits(1):
            dumps = bench_dumps(args.results)
            synthetic = None if args.skip_synthetic else bench_synthetic(args.sizes)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        dumps.to_csv(raw["dumps"], index=False)
        if synthetic is not None:
            synthetic.to_csv(raw["scaling"], index=False)
    order = attack_order(args.results)
    dumps = dumps.sort_values(["model", "trial"], kind="stable").sort_values(
        "attack", key=lambda a: a.map(lambda x: order.get(x, len(order))), kind="stable")
    text = report(dumps, synthetic, args.results)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
