"""Bench the score step (SPEC 1, score.py): read every projection file and compute POP, vs sklearn's 1-NN.

Writes trials x 7 projections x 3 attacks projection files in the pipeline's format (HDF5 with `index`,
`clean`, `adv`) to a temporary folder, then times what the score rule does: read each file and score it.
The same scoring with sklearn's KNeighborsClassifier(n_neighbors=1, algorithm='brute') (vrapi's way) runs
in the same process on the same arrays; both must agree. Results go to bench/out/bench_score.csv.

    python bench/bench_score.py [--trials 100] [--n 500]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from advpipe.io.h5 import provenance, read_dump, write_dump
from advpipe.metrics import pop_score
from advpipe.projections import PROJECTIONS

ATTACKS = ("fgsm", "bim", "cw")


def sklearn_pop(clean_z: np.ndarray, labels: np.ndarray, adv_z: np.ndarray, pred: np.ndarray) -> float:
    """vrapi's score.py: KNeighborsClassifier(1, euclidean, brute) fit on clean, predict adv."""
    clf = KNeighborsClassifier(n_neighbors=1, metric="euclidean", algorithm="brute").fit(clean_z, labels)
    return float((clf.predict(adv_z) == pred).sum() / len(pred))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--n", type=int, default=500, help="points per projection (clean and adversarial)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, args.n)
    preds = {a: np.where(rng.random(args.n) < 0.7, rng.integers(0, 10, args.n), labels) for a in ATTACKS}
    jobs = [(a, p, t) for a in ATTACKS for p in PROJECTIONS for t in range(args.trials)]
    attrs = provenance({"bench": "score"}, seed=0)  # computed once: it runs git

    with tempfile.TemporaryDirectory(prefix="bench_score_") as tmp:
        paths = {j: Path(tmp) / j[0] / j[1] / f"{j[2]}.h5" for j in jobs}
        t0 = time.perf_counter()
        for j in tqdm(jobs, desc="write", mininterval=1.0):
            centres = 5 * rng.normal(size=(10, 2))
            clean = (centres[labels] + rng.normal(size=(args.n, 2))).astype(np.float32)
            adv = (clean + 0.5 * rng.normal(size=(args.n, 2))).astype(np.float32)
            write_dump(paths[j], {"index": np.arange(args.n), "clean": clean, "adv": adv}, attrs)
        t_write = time.perf_counter() - t0

        # What the score rule does: read, then score, file after file.
        t0 = time.perf_counter()
        ours = {}
        for j in tqdm(jobs, desc="read + pop_score", mininterval=1.0):
            d = read_dump(paths[j], ["clean", "adv"])
            ours[j] = pop_score(d["clean"], labels, d["adv"], preds[j[0]])
        t_ours = time.perf_counter() - t0

        t0 = time.perf_counter()
        data = {j: read_dump(paths[j], ["clean", "adv"]) for j in jobs}
        t_read = time.perf_counter() - t0

    t0 = time.perf_counter()
    for j in jobs:
        pop_score(data[j]["clean"], labels, data[j]["adv"], preds[j[0]])
    t_ours_score = time.perf_counter() - t0

    t0 = time.perf_counter()
    theirs = {}
    for j in tqdm(jobs, desc="sklearn", mininterval=1.0):
        theirs[j] = sklearn_pop(data[j]["clean"], labels, data[j]["adv"], preds[j[0]])
    t_sk_score = time.perf_counter() - t0

    # sklearn's brute kNN runs OpenMP threads; on a shared 2-core machine they can stall on each other,
    # so it is also timed single-threaded (ours is single-threaded numpy).
    t0 = time.perf_counter()
    with threadpool_limits(1):
        for j in tqdm(jobs, desc="sklearn, 1 thread", mininterval=1.0):
            sklearn_pop(data[j]["clean"], labels, data[j]["adv"], preds[j[0]])
    t_sk1_score = time.perf_counter() - t0

    mismatches = sum(ours[j] != theirs[j] for j in jobs)
    rows = [
        dict(step="write files (setup)", seconds=t_write),
        dict(step="read only", seconds=t_read),
        dict(step="read + pop_score (score rule)", seconds=t_ours),
        dict(step="pop_score only", seconds=t_ours_score),
        dict(step="sklearn 1-NN only", seconds=t_sk_score),
        dict(step="sklearn 1-NN only, 1 thread", seconds=t_sk1_score),
        dict(step="read + sklearn (estimated: read only + sklearn only)", seconds=t_read + t_sk_score),
    ]
    table = pd.DataFrame(rows).assign(files=len(jobs), n=args.n)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "bench_score.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"scoring: sklearn / ours = {t_sk_score / t_ours_score:.1f}x "
          f"(sklearn on 1 thread: {t_sk1_score / t_ours_score:.1f}x); "
          f"read + score: {(t_read + t_sk_score) / t_ours:.1f}x; target < 60 s: "
          f"{'met' if t_ours < 60 else 'MISSED'} ({t_ours:.1f} s); scores differing from sklearn: {mismatches}")


if __name__ == "__main__":
    main()
