"""Interrupted runs resume to the same results, and runs repeat bit for bit.

The workflow is killed with SIGKILL at several points (snakemake with its jobs, one running job, snakemake
alone), then rerun with `--rerun-incomplete`. After every kill, each file at a final path must already
equal the uninterrupted run's; after the last resume, the whole results tree must.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from wf import compare_results, job_counts, result_files, snakemake, snakemake_cmd

pytestmark = pytest.mark.slow


def session_processes(sid: int) -> dict[int, str]:
    """{pid: command line} of the live processes in session `sid` (zombies excluded)."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            pid = int(entry.name)
            if os.getsid(pid) != sid or (entry / "stat").read_text().split(")")[-1].split()[0] == "Z":
                continue
            procs[pid] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ProcessLookupError):
            continue
    return procs


def running_jobs(sid: int, script: str) -> list[int]:
    """Pids of jobs running workflow_scripts/<script>.py (snakemake runs a copy in .snakemake/scripts/)."""
    return [pid for pid, cmd in session_processes(sid).items()
            if ".snakemake/scripts/" in cmd and cmd.split()[-1].endswith(f".{script}.py")]


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# (what is killed, the job whose start triggers the kill, seconds to wait after it started)
KILLS = [
    ("snakemake and all its jobs", "train", 1.5),
    ("one running job", "attack", 1.0),
    ("snakemake alone (its jobs run on, orphaned)", "project", 0.5),
    ("snakemake and all its jobs", "plot", 0.3),
]


def interrupted_run(workdir: Path, victim: str, trigger: str, delay: float) -> str:
    """Start the workflow, SIGKILL `victim` once a `trigger` job has run `delay` s, wait for every process
    of the run to end. Returns snakemake's output."""
    log = workdir / f"interrupted_{trigger}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(snakemake_cmd(workdir, "--rerun-incomplete"), cwd=workdir, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    sid = proc.pid
    jobs = wait_until(lambda: running_jobs(sid, trigger) or proc.poll() is not None, 300,
                      f"a {trigger} job")
    assert proc.poll() is None, f"the run ended before any {trigger} job started:\n{log.read_text()}"
    time.sleep(delay)
    if victim == "one running job":
        os.kill(jobs[0], signal.SIGKILL)
        assert proc.wait(300) != 0  # snakemake notices the failure, lets the other jobs end, stops
    elif victim.startswith("snakemake alone"):
        proc.kill()
        proc.wait()
    else:
        os.killpg(sid, signal.SIGKILL)
        proc.wait()
    wait_until(lambda: not session_processes(sid), 300, "the run's processes to end")
    return log.read_text()


def test_killed_runs_resume_to_identical_results(tiny_run, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    rounds = []
    for victim, trigger, delay in KILLS:
        interrupted_run(workdir, victim, trigger, delay)
        half = compare_results(tiny_run, workdir, partial=True)
        assert half == [], f"after killing {victim} during {trigger}: {half}"
        rounds.append((victim, trigger, len(result_files(workdir))))
        # A killed snakemake leaves its lock behind; --unlock is what a user runs too.
        snakemake(workdir, "--unlock")
    assert [n for *_, n in rounds] == sorted(n for *_, n in rounds)  # every round got further
    assert 0 < rounds[-1][2] < len(result_files(tiny_run))

    snakemake(workdir, "--rerun-incomplete")
    assert compare_results(tiny_run, workdir) == []
    assert "Nothing to be done" in snakemake(workdir, "--dry-run").stdout
    # This run built everything a second time from nothing (every killed job started over): the same config and
    # seed give the same files, byte for byte (HDF5 included), however often the run was interrupted.
    ref, got = result_files(tiny_run), result_files(workdir)
    assert [name for name in ref if ref[name].read_bytes() != got[name].read_bytes()
            and "run_cost" not in name] == []  # the run cost per rule is the run's timings


def test_one_target_built_alone_is_identical(tiny_run, tmp_path):
    target = "results/attacks/cnn/cw.h5"
    out = snakemake(tmp_path, target)
    assert job_counts(out.stdout + out.stderr) == {"attack": 1, "represent": 1, "train": 1, "total": 3}
    built = result_files(tmp_path)
    assert "attacks/cnn/cw.h5" in built and not any(name.startswith("projections") for name in built)
    assert compare_results(tiny_run, tmp_path, partial=True) == []
