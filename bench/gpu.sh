#!/usr/bin/env bash
# GPU benchmark of advpipe (issue 17): the attack engine's FGSM, PGD and C&W against torchattacks on one GPU, the
# ARA of a pre-activation ResNet-44 (n = 1000, the explanations study's settings) and one training epoch of the CIFAR
# ResNet-18 (50,000 images, batch 128), each against the same code on the CPU. bench/gpu_bench.py says what exactly.
#
# How to run (from anywhere; it works in the repository root):
#   bash bench/gpu.sh              # on the GPU machine: at most 8 minutes; writes bench/out/gpu.md and prints it
#   bash bench/gpu.sh --quick      # tiny sizes on the CPU, anywhere: checks the script (its times mean nothing)
#   BENCH_BUDGET_S=300 bash bench/gpu.sh     # a tighter budget (seconds for the Python part; default 420)
#   PYTHON=/path/to/python bash bench/gpu.sh # another interpreter than the repository's .venv
# Extra arguments go to gpu_bench.py (--repeats, --cpu-threads, --device, --out).
#
# Installs nothing and needs no network: it runs the repository's .venv/bin/python (made beforehand with
# `make setup` and `pip install -e '.[bench]'`, which brings torchattacks; the GPU machine gets the working tree and,
# where it is carried along, that .venv), else PYTHON or python3 with torch, torchvision and torchattacks installed.
# advpipe is imported from this tree's lib/ (PYTHONPATH), so a .venv whose editable install points at another
# checkout path still works. When $OUT is set (the device runner's output folder), gpu.md is copied there too.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-.venv/bin/python}"
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "gpu.sh: $PY cannot import torch; trying python3" >&2
    PY=python3
fi
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "gpu.sh: no Python with torch found (set PYTHON=...); nothing is installed from the network" >&2
    exit 2
fi

export PYTHONPATH="$PWD/lib${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 PIP_NO_INDEX=1
BUDGET="${BENCH_BUDGET_S:-420}"
"$PY" -c 'import torch, sys; print(f"gpu.sh: {sys.executable}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")'

budget_args=(--budget "$BUDGET")
for arg in "$@"; do [ "$arg" = "--quick" ] && budget_args=(); done  # --quick has its own budget
# The Python part keeps to its budget; the timeout (budget + 50 s, under 8 minutes by default) is the backstop.
# gpu.md is rewritten after each section, so a run stopped by it keeps what was measured.
timeout --signal=INT --kill-after=15 "$((BUDGET + 50))" "$PY" bench/gpu_bench.py "${budget_args[@]}" "$@"
status=$?
if [ -n "${OUT:-}" ] && [ -d "${OUT}" ] && [ -f bench/out/gpu.md ]; then
    cp bench/out/gpu.md "$OUT/gpu.md"
fi
exit "$status"
