"""Debian packages some tests need (SLURM, espeak-ng): installed when missing and this is root, as in CI."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SBIN = [Path("/usr/sbin"), Path("/usr/bin")]


def which(name: str) -> str | None:
    """A program on PATH, or in the sbin folders a non-login PATH may lack."""
    return shutil.which(name) or next((str(d / name) for d in SBIN if (d / name).exists()), None)


def ensure_debian_packages(packages: list[str], programs: list[str]) -> str | None:
    """apt-get install `packages` unless every one of `programs` is present. Returns None when they are, or
    why they cannot be had (not root); a failed install raises RuntimeError with apt's output."""
    if all(which(p) for p in programs):
        return None
    if os.geteuid() != 0:
        return f"missing {programs}; installing them needs root: apt-get install {' '.join(packages)}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    missing = [p for p in programs if not which(p)]
    if missing:
        raise RuntimeError(f"installed {packages} but still missing: {missing}")
    return None
