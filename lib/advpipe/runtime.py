"""Process set-up shared by every stage: seeds, determinism, device, threads."""
from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch, and ask torch for deterministic kernels (bit-identical CPU runs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    # cuBLAS needs this for deterministic matmuls on GPU; harmless on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def derive_seed(seed: int, *keys: object) -> int:
    """A seed for one target: config seed plus its wildcards, stable across processes (not hash())."""
    text = "/".join([str(seed), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def select_device(name: str = "auto") -> torch.device:
    """'auto' takes the GPU when there is one; 'cuda' without one is an error, not a silent fallback."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(name)


def set_threads(n: int) -> None:
    """Use the threads the workflow gave this job; the same count gives the same CPU results."""
    torch.set_num_threads(max(1, int(n)))
