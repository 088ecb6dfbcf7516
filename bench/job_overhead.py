"""Per-job start-up against work, rule by rule (issue 17): how much of each job of a finished run is the start-up
every Snakemake `script:` job pays before its first line of work (a fresh interpreter, Snakemake's preamble, the
script's imports), measured here, beside the job's own time from the run's benchmark files.

    python bench/job_overhead.py RUN_DIR [RUN_DIR ...] [--checkout DIR ...] [--repeats 3]

RUN_DIR: a folder that ran the workflow (its benchmarks/); each gets its own table. --checkout: the source tree whose
imports are timed for the RUN_DIR at the same position (default: this one); pass an older clone to measure the
"before" of a change next to the "after" in one run, interleaved, so load drift hits both alike. The start-up of a
rule is the best of --repeats fresh `python -c "<preamble>; <the script's imports>"` processes: the interpreter,
`from snakemake import script` (what Snakemake's preamble imports) and the imports of workflow_scripts/<rule>.py.
Reading inputs is work, not start-up, here. Writes bench/out/job_overhead.md.
"""
from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
from advpipe.pipeline.run_cost import read_benchmark  # noqa: E402

PREAMBLE = "from snakemake import script"


def rule_scripts(checkout: Path) -> dict[str, Path]:
    """rule -> workflow script, from the `script:` lines of rules/*.smk."""
    out = {}
    for smk in sorted((checkout / "rules").glob("*.smk")):
        rule = None
        for line in smk.read_text().splitlines():
            if m := re.match(r"\s*rule (\w+):", line):
                rule = m.group(1)
            elif rule and (m := re.match(r'\s*"\.\./(workflow_scripts/\w+\.py)"', line)):
                out[rule] = checkout / m.group(1)
    return out


def cost_table(benchmarks: Path) -> pd.DataFrame:
    """rule, jobs, total_s, mean_s of a run's benchmark files (this workflow writes benchmarks/<rule>/...)."""
    rows = [{"rule": p.relative_to(benchmarks).parts[0] if p.parent != benchmarks else p.stem,
             "s": read_benchmark(p)[0]} for p in sorted(benchmarks.rglob("*.tsv"))]
    return (pd.DataFrame(rows).groupby("rule")["s"].agg(jobs="size", total_s="sum", mean_s="mean").reset_index())


def script_imports(path: Path) -> str:
    """The script's top-level import statements, as one line of Python."""
    tree = ast.parse(path.read_text())
    return "; ".join(ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))


def startup_seconds(python: str, code: str, checkout: Path, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([python, "-c", code], check=True, cwd=checkout,
                       env={"PYTHONPATH": str(checkout / "lib"), "PATH": "/usr/bin:/bin"})
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--checkout", action="append", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/job_overhead.md")
    args = parser.parse_args(argv)
    checkouts = args.checkout or [ROOT] * len(args.runs)
    if len(checkouts) != len(args.runs):
        parser.error("give one --checkout per RUN_DIR (or none)")
    tables = []
    scripts = [rule_scripts(c) for c in checkouts]
    costs = [cost_table(run / "benchmarks") for run in args.runs]
    rules = sorted(set().union(*(set(c["rule"]) for c in costs)) & set().union(*scripts))
    startup: list[dict[str, float]] = [{} for _ in args.runs]
    for rule in rules:  # interleaved: each rule timed for every checkout in turn
        for i, checkout in enumerate(checkouts):
            if rule in scripts[i]:
                code = f"{PREAMBLE}; {script_imports(scripts[i][rule])}"
                startup[i][rule] = startup_seconds(sys.executable, code, checkout, args.repeats)
    bare = startup_seconds(sys.executable, "pass", ROOT, args.repeats)
    lines = [f"# Per-job start-up vs work ({time.strftime('%Y-%m-%d %H:%M')}, best of {args.repeats}; "
             f"a bare interpreter: {bare:.2f} s)", ""]
    for run, checkout, cost, up in zip(args.runs, checkouts, costs, startup):
        table = cost.set_index("rule")[["jobs", "total_s", "mean_s"]].join(pd.Series(up, name="startup_s"),
                                                                          how="inner")
        table["startup_share"] = table["startup_s"] / table["mean_s"]
        table["startup_total_s"] = table["startup_s"] * table["jobs"]
        table = table.sort_values("startup_total_s", ascending=False)
        tables.append(table)
        lines += [f"## {run} (imports of {checkout})", "",
                  "| rule | jobs | job s (mean) | start-up s | start-up share | start-up s, all jobs |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {rule} | {int(r.jobs)} | {r.mean_s:.2f} | {r.startup_s:.2f} | {r.startup_share:.0%} | "
                  f"{r.startup_total_s:.0f} |" for rule, r in table.iterrows()]
        lines += ["", f"Start-up in all: {table.startup_total_s.sum():.0f} s of {table.total_s.sum():.0f} s of job "
                      f"time ({table.startup_total_s.sum() / table.total_s.sum():.0%}), {int(table.jobs.sum())} jobs.",
                  ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
