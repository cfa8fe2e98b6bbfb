#!/usr/bin/env bash
# The GPU bench, prepared to run as one short call on a machine with an NVIDIA GPU:
#   bench/gpu/run.sh            (from the repository root)
# It needs the project's venv (make venv protos) with a CUDA build of torch
# (pip install torch==<the pin in requirements/triton.txt> from the CUDA index),
# writes full-size random weights once (about 1.2 GB under var/bench-weights/gpu),
# serves them with KIND_GPU instances and compares with raw PyTorch on the same GPU.
# Figures: bench/results/gpu/gpu.json and gpu.png; stdout has the table.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH="$PWD:$PWD/models"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" - <<'CHECK'
import torch
if not torch.cuda.is_available():
    raise SystemExit(f"torch {torch.__version__} sees no CUDA device: install a CUDA build of torch")
print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
CHECK
[ -e genmedia/v1/.generated ] || make protos
exec "$PY" -m bench.gpu --device "${GENMEDIA_BENCH_DEVICE:-cuda}" "$@"
