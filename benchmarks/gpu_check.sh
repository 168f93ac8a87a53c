#!/usr/bin/env bash
# GPU check of the image pipeline: train the cifar10 profile's U-Net (≈ 36 M parameters, bf16) on
# synthetic 32×32 RGB images and sample from it, on one GPU; prints images/s (training) and
# samples/s (sampling) and writes reports/benchmarks/gpu_check.json (benchmarks/gpu_check.py).
#
#     benchmarks/gpu_check.sh                      # needs a CUDA device; about 1–3 min on an A100/H100
#     benchmarks/gpu_check.sh --steps 1000         # options go to benchmarks/gpu_check.py
#     benchmarks/gpu_check.sh --cpu-dry-run [--out /tmp/gpu_check.json]   # tiny, on the CPU: code path only
#
# Needs a CUDA build of torch in the environment (the Makefile installs the CPU build: reinstall
# torch==2.13.0 from the CUDA index, e.g. https://download.pytorch.org/whl/cu128). Refuses, exit
# status 3, when torch sees no CUDA device; stops after 8 minutes (exit status 124).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python

if [ "${1:-}" = "--cpu-dry-run" ]; then
    shift
    exec "$PY" benchmarks/gpu_check.py --cpu-dry-run "$@"
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check.sh: no CUDA device: torch $("$PY" -c 'import torch; print(torch.__version__, "(CUDA build:", torch.version.cuda, end=")")') sees no GPU." >&2
    echo "gpu_check.sh: this check needs a GPU and a CUDA build of torch; nothing was run (--cpu-dry-run checks the code path on the CPU)." >&2
    exit 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
