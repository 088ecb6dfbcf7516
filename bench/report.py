"""Shared by the benchmarks: write the result rows as CSV under bench/out/."""
from __future__ import annotations

import csv
from pathlib import Path


def write_rows(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


def time_interleaved(impls: dict, repeats: int) -> tuple[dict, dict[str, list[float]]]:
    """Run each implementation once (warm-up; its output is returned for comparison), then `repeats` timed
    rounds with the implementations interleaved, so that load drift on a shared machine hits all alike."""
    import time

    outputs = {name: f() for name, f in impls.items()}
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(repeats):
        for name, f in impls.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return outputs, times
