#!/usr/bin/env bash
# The GPU bench, prepared to run as one short call on a machine with an NVIDIA GPU:
#   bench/gpu/run.sh [python -m bench.gpu arguments]        (from the repository root)
# With the project's venv (make venv protos, a CUDA build of torch in it), or on a lent GPU
# machine with its own Python and the staged parts installed (bench/gpu/README.md):
#   PY=python3 GENMEDIA_GPU_TARGET=var/gpu-target bench/gpu/run.sh
# It writes full-size random weights once (about 1.2 GB under var/bench-weights/gpu),
# serves them with KIND_GPU instances and compares with raw PyTorch on the same GPU.
# Figures: bench/results/gpu/gpu.json and gpu.png (or --out); stdout has the table.
# GENMEDIA_BENCH_DEVICE=cpu runs the same path on a CPU (the dry run in make test).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH="${GENMEDIA_GPU_TARGET:+$GENMEDIA_GPU_TARGET:}$PWD:$PWD/models"
device=${GENMEDIA_BENCH_DEVICE:-cuda}

if [[ $device == cuda* ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
# Everything the run imports, named at once if something is missing (stage it).
"$PY" - "$device" <<'CHECK'
import importlib, sys
missing = []
for name in ("torch", "numpy", "grpc", "grpc_health", "grpc_reflection", "google.protobuf",
             "google.api", "tritonclient.grpc", "pydantic_settings", "pythonjsonlogger",
             "opentelemetry.sdk", "c2pa", "cryptography", "tokenizers", "transformers",
             "pytorch_pretrained_biggan", "matplotlib", "tqdm", "psutil", "prometheus_client",
             "PIL", "hiredis", "starlette", "uvicorn", "multipart"):
    try:
        importlib.import_module(name)
    except Exception as error:  # a broken install is as missing as an absent one
        missing.append(f"{name} ({type(error).__name__}: {error})")
if missing:
    raise SystemExit("missing here: " + "; ".join(missing))
import numpy, torch
print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, torch {torch.__version__}")
if sys.argv[1].startswith("cuda"):
    if not torch.cuda.is_available():
        raise SystemExit(f"torch {torch.__version__} sees no CUDA device")
    print(f"on {torch.cuda.get_device_name()}")
CHECK
if [ ! -e genmedia/v1/.generated ]; then
  [ -x .venv/bin/python ] || { echo "genmedia/ (generated from protos/) is missing: carry it" >&2; exit 1; }
  make protos
fi
exec "$PY" -m bench.gpu --device "$device" "$@"
