"""Process set-up shared by every stage: seeds, determinism, device, threads.

torch is imported inside the functions: a projection job that never touches torch should not pay
for importing it (about a second per job).
"""
from __future__ import annotations

import hashlib
import os
import random
import sys

import numpy as np

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch, and ask torch for deterministic kernels (bit-identical CPU runs)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # torch.use_deterministic_algorithms(True, warn_only=True) also imports torch._inductor to set its
    # `deterministic` flag: about 2 s of imports per job (torch._dynamo), for a compiler no stage uses. The eager
    # kernels read only the C++ flag, set here directly; the inductor flag is set too when it is loaded.
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    if "torch._inductor.config" in sys.modules:
        sys.modules["torch._inductor.config"].deterministic = True
    torch.backends.cudnn.benchmark = False
    # cuBLAS needs this for deterministic matmuls on GPU; harmless on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def derive_seed(seed: int, *keys: object) -> int:
    """A seed for one target: config seed plus its wildcards, stable across processes (not hash())."""
    text = "/".join([str(seed), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def select_device(name: str = "auto"):
    """'auto' takes the GPU when there is one; 'cuda' without one is an error, not a silent fallback."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(name)


def set_threads(n: int) -> None:
    """Use exactly the threads the workflow gave this job, in torch, BLAS, OpenMP and numba.

    Oversubscribed cores slow small kernels down by an order of magnitude, and the same thread count
    gives the same CPU results. Env vars cover libraries loaded later; threadpoolctl those loaded now.
    """
    n = max(1, int(n))
    for var in _THREAD_VARS:
        os.environ[var] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
