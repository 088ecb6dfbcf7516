"""A real one-node SLURM cluster on localhost for the tests: Debian's slurmctld, slurmd and munge.

Everything lives in one temporary folder (config, state, spool, logs, munge socket); the daemons run as
this test's own processes and are stopped by `stop()`. Nothing under /etc is written.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from system_packages import ensure_debian_packages, which

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
PROGRAMS = ["slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "munged"]


class ClusterError(RuntimeError):
    pass


def ensure_installed() -> str | None:
    """Install Debian's SLURM and munge packages when missing. Returns None, or why they cannot be had."""
    return ensure_debian_packages(PACKAGES, PROGRAMS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterError("cannot read MemTotal from /proc/meminfo")


class SlurmCluster:
    """One node (this machine) with its real CPUs, most of its memory and one stand-in GPU.

    The GPU is a generic resource backed by /dev/null, so jobs that ask for `--gpus=1` are scheduled (and
    their request is visible in `scontrol show job`) on a machine without one; the code then runs on the CPU.
    """

    def __init__(self, root: Path | None = None):
        # pytest's tmp folders are private to root; munged (running as `munge`) must reach its socket folder.
        self.root = Path(root or tempfile.mkdtemp(prefix="advpipe-slurm-"))
        self.root.chmod(0o755)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.bin = self.root / "bin"
        self.mem_mb = _mem_total_mb() - 2048
        self.cpus = os.cpu_count() or 1
        self._pids: list[Path] = []

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients (sbatch, squeue, snakemake) talking to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{self.bin}:{os.environ['PATH']}"}

    def _write_config(self) -> None:
        r, munge = self.root, self.root / "munge"
        for sub in ("state", "spool", "bin"):
            (r / sub).mkdir(exist_ok=True)
        self.conf.write_text(f"""\
ClusterName=advpipe
SlurmctldHost={self.node}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge}/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd, no cgroups, no accounting daemon: the plain plugins.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
# Finished jobs stay visible to squeue/scontrol for an hour: the status command and the tests read them.
MinJobAge=3600
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb} Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        (r / "gres.conf").write_text(f"NodeName={self.node} Name=gpu Count=1 File=/dev/null\n")
        # snakemake-executor-plugin-slurm-jobstep drops every SLURM_* variable (SLURM_CONF too) before its
        # inner `srun`; on a real cluster slurm.conf sits at the default path. This shim restores ours.
        srun = self.bin / "srun"
        srun.write_text(f'#!/bin/sh\nexport SLURM_CONF={self.conf}\nexec {which("srun")} "$@"\n')
        srun.chmod(0o755)

    def _start_munge(self) -> None:
        munge = self.root / "munge"
        munge.mkdir(exist_ok=True)
        shutil.chown(munge, "munge", "munge")
        munge.chmod(0o755)  # munged insists that everyone can reach the socket
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run([which("mungekey"), "--create"], check=True)
            shutil.chown(key, "munge", "munge")
        self._run(["runuser", "-u", "munge", "--", which("munged"), f"--socket={munge}/munge.socket",
                   f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                   f"--seed-file={munge}/munged.seed"])
        self._pids.append(munge / "munged.pid")

    def _run(self, cmd: list[str]) -> None:
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env)
        if out.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr}\n{self.logs()}")

    def start(self, timeout: float = 60) -> "SlurmCluster":
        self._write_config()
        self._start_munge()
        self._run([which("slurmctld")])
        self._pids.append(self.root / "slurmctld.pid")
        self._run([which("slurmd")])
        self._pids.append(self.root / "slurmd.pid")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.command("sinfo", "--noheader", "--format=%t", check=False).strip()
            if state in ("idle", "mix", "alloc"):
                return self
            time.sleep(0.5)
        raise ClusterError(f"the node did not become idle in {timeout} s (state {state!r})\n{self.logs()}")

    def command(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(list(args), capture_output=True, text=True, env=self.env)
        if check and out.returncode != 0:
            raise ClusterError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (keys such as JobState, TresPerJob, Comment)."""
        fields = {}
        for word in self.command("scontrol", "show", "job", "--oneliner", job_id).split():
            key, _, value = word.partition("=")
            fields[key] = value
        return fields

    def submitted_job_ids(self) -> list[str]:
        """Every batch job the controller accepted, read from its own log."""
        text = (self.root / "slurmctld.log").read_text()
        return [line.split("JobId=")[1].split()[0] for line in text.splitlines()
                if "_slurm_rpc_submit_batch_job:" in line and "JobId=" in line]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in
                         (self.root / "slurmctld.log", self.root / "slurmd.log") if p.exists())

    def stop(self) -> None:
        for pid_file in reversed(self._pids):
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                continue
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.1)
        self._pids.clear()
