"""Helpers for the tests that run the real workflow: snakemake in a subprocess, job counts, result trees."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def snakemake_cmd(workdir, *args, configfile=TINY, cores: int | None = 2) -> list[str]:
    # Targets and flags first: --configfile takes every word after it.
    cmd = [*SNAKEMAKE, *args, "--directory", str(workdir)]
    if cores is not None:
        cmd += ["--cores", str(cores)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    return cmd


def snakemake(workdir, *args, configfile=TINY, check=True, env=None, cores: int | None = 2):
    out = subprocess.run(snakemake_cmd(workdir, *args, configfile=configfile, cores=cores),
                         capture_output=True, text=True, cwd=workdir, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"snakemake failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table that snakemake prints (also on --dry-run)."""
    counts = {}
    if "Job stats:" not in output:
        return counts
    for line in output.split("Job stats:", 1)[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def result_files(workdir: Path) -> dict[str, Path]:
    """Every file under results/ by relative path; temporary files of unfinished writes excluded."""
    root = Path(workdir) / "results"
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".tmp")}


def h5_contents(path: Path) -> dict:
    """{name: array} for every dataset, {name@attr: value} for every attribute (file and datasets)."""
    out = {}
    with h5py.File(path, "r") as f:
        for key, value in f.attrs.items():
            out[f"@{key}"] = value
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
            for key, value in obj.attrs.items():
                out[f"{name}@{key}"] = value
        f.visititems(visit)
    return out


def same_file(a: Path, b: Path) -> str | None:
    """None when equal; else what differs. HDF5 by datasets and attrs, everything else byte for byte."""
    if a.suffix == ".h5":
        try:
            ca, cb = h5_contents(a), h5_contents(b)
        except OSError as err:
            return f"unreadable HDF5: {err}"
        if ca.keys() != cb.keys():
            return f"different datasets/attrs: {sorted(set(ca) ^ set(cb))}"
        diff = [k for k in ca if not np.array_equal(np.asarray(ca[k]), np.asarray(cb[k]))]
        return f"different values in {diff}" if diff else None
    return None if a.read_bytes() == b.read_bytes() else "different bytes"


def compare_results(reference: Path, other: Path, partial: bool = False) -> list[str]:
    """Differences between two runs' results/. With `partial`, `other` may lack files (an interrupted run)
    but every file it has must equal the reference's: nothing half-written at a final path."""
    ref, got = result_files(reference), result_files(other)
    # the run cost per rule is the run's timings, not a result: it differs between any two runs
    ref, got = ({k: v for k, v in files.items() if "run_cost" not in k} for files in (ref, got))
    problems = [f"{name}: not in the reference run" for name in got.keys() - ref.keys()]
    if not partial:
        problems += [f"{name}: missing" for name in ref.keys() - got.keys()]
    for name in sorted(got.keys() & ref.keys()):
        why = same_file(ref[name], got[name])
        if why:
            problems.append(f"{name}: {why}")
    return problems


def digests(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `folder` (relative path -> hex), except under a folder named in `skip`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not set(skip) & set(p.parts)}


class RunsCode:
    """Unpickling this runs Python code that writes `marker`: the proof that a loader ran pickled code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pickled code ran')",))
