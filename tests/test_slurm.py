"""The tiny workflow on a real one-node SLURM cluster through profiles/slurm, nothing changed but the profile.

The module installs Debian's SLURM and munge when they are missing, starts munged, slurmctld and slurmd as
its own processes (tests/slurm_cluster.py), runs the workflow with `snakemake --profile profiles/slurm`,
cancels one running job with scancel on the way, and stops the daemons at the end.
"""
from __future__ import annotations

import re
import shutil
import threading
import time
from types import SimpleNamespace

import pytest

from slurm_cluster import SlurmCluster, ensure_installed
from wf import ROOT, compare_results, snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

GPU_RULES = {"train", "represent", "attack"}
GROUPS = {"projections_project"}  # the group job of profiles/slurm's group "projections" (its rules joined)
CANCELLED_RULE = "train"
# One chain of GPU and CPU jobs, not the whole tiny run: each SLURM job costs seconds of scheduling, and the tiny
# run's 40 jobs took 5.5 min here; the other rules are left to the local runs.
TARGETS = ("results/projections/cnn/fgsm/pca/0.h5", "results/projections/cnn/fgsm/pca/1.h5")


@pytest.fixture(scope="module")
def cluster():
    why = ensure_installed()
    if why:
        pytest.skip(why)
    c = SlurmCluster().start()
    yield c
    c.stop()
    shutil.rmtree(c.root, ignore_errors=True)


def rule_of(job: dict[str, str]) -> str:
    # The executor plugin comments each job "rule_<rule>_wildcards_<values>".
    return re.match(r"rule_(.+?)(_wildcards_.*)?$", job["Comment"]).group(1)


def cancel_first_running(cluster: SlurmCluster, rule: str, cancelled: list[str], stop: threading.Event):
    """scancel the first job of `rule` once SLURM reports it RUNNING (after it has run a second)."""
    while not stop.is_set():
        for line in cluster.command("squeue", "--noheader", "--format=%i %T %M %k", check=False).splitlines():
            job_id, state, elapsed, comment = line.split(maxsplit=3)
            if state == "RUNNING" and comment.startswith(f"rule_{rule}_") and elapsed not in ("0:00",):
                cluster.command("scancel", job_id)
                cancelled.append(job_id)
                return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm_run")
    cancelled, stop = [], threading.Event()
    canceller = threading.Thread(target=cancel_first_running, args=(cluster, CANCELLED_RULE, cancelled, stop))
    canceller.start()
    start = time.monotonic()
    try:
        # --cores: the node's CPUs, the most one (group) submission may ask for (the profile says 16)
        out = snakemake(workdir, *TARGETS, "--profile", str(ROOT / "profiles/slurm"), "--cores", "2",
                        env=cluster.env, cores=None, check=False)
    finally:
        stop.set()
        canceller.join()
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{cluster.logs()}"
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", out.stdout + out.stderr)
    jobs = {job_id: cluster.job(job_id) for job_id in cluster.submitted_job_ids()}
    return SimpleNamespace(workdir=workdir, out=out, submitted=submitted, jobs=jobs, cancelled=cancelled,
                           seconds=time.monotonic() - start)


def test_every_job_went_through_sbatch(slurm_run):
    # Every job snakemake submitted is a batch job the controller accepted, and nothing else ran there.
    assert sorted(slurm_run.submitted, key=int) == sorted(slurm_run.jobs, key=int)
    rules = [rule_of(job) for job in slurm_run.jobs.values() if job["JobState"] == "COMPLETED"]
    assert set(rules) == GPU_RULES | GROUPS  # `all` is a local rule
    # both projection trials went in one submission (the plugin deletes a successful job's log, so the files
    # it wrote say that both ran)
    assert rules.count("projections_project") == 1
    assert all((slurm_run.workdir / target).is_file() for target in TARGETS)
    states = {job_id: job["JobState"] for job_id, job in slurm_run.jobs.items()}
    assert {s for i, s in states.items() if i not in slurm_run.cancelled} == {"COMPLETED"}


def test_gpu_rules_carry_the_gpu_request(slurm_run):
    for job in slurm_run.jobs.values():
        wants_gpu = rule_of(job) in GPU_RULES  # a group of projections is CPU work
        assert ("gpu:1" in job.get("TresPerJob", "")) == wants_gpu, job


def test_cancelled_job_was_rerun(slurm_run):
    assert len(slurm_run.cancelled) == 1, "no running job was caught to cancel"
    first = slurm_run.jobs[slurm_run.cancelled[0]]
    assert first["JobState"] == "CANCELLED"
    again = [job for i, job in slurm_run.jobs.items()
             if job["Comment"] == first["Comment"] and int(i) > int(slurm_run.cancelled[0])]
    assert [job["JobState"] for job in again] == ["COMPLETED"]


def test_outputs_equal_the_local_run(slurm_run, tiny_run):
    got = [p for p in (slurm_run.workdir / "results").rglob("*") if p.is_file()]
    assert len(got) > 10  # the chain's model, dumps, tables and projection
    assert compare_results(tiny_run, slurm_run.workdir, partial=True) == []
