#!/usr/bin/env bash
# GPU encoder latency on a lent machine with PyTorch + CUDA (TensorRT/pycuda optional, reported absent).
# Usage, from anywhere:  bash scripts/gpu_bench.sh [extra benchmarks.gpu args, e.g. --modalities audio imu]
# Writes gpu-<card>-<date>.{json,md,png} to $OUT (the device runner's folder) or benchmarks/results.
# The hard `timeout` keeps a 10-minute device call safe even if a CUDA call hangs; the script's own
# --budget-s (default 420 s) skips variants that no longer fit, so a report is always written.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi unavailable"
"$PY" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
PYTHONPATH=. timeout -k 10 "${HARD_LIMIT_S:-540}" "$PY" -m benchmarks.gpu --out "$OUT_DIR" \
    --budget-s "${BUDGET_S:-420}" "$@" 2>&1 | tee "$OUT_DIR/gpu_bench.log"
exit "${PIPESTATUS[0]}"
