#!/usr/bin/env bash
# Export the streaming demo's bundle: the edge_small architecture with seeded random
# weights (the trained demo bundle replaces it when the training issue lands).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bundles/demo}
.venv/bin/python -m export bundle --config edge_small --random-weights --seed 0 \
  --modalities text audio imu depth thermal --out "$out" --quiet
