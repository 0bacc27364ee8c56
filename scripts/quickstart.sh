#!/usr/bin/env bash
# Set up (CPU torch for the export step) and run the main job on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
EDGEBIND_SKIP_LITE=1 bash scripts/setup.sh
exec .venv/bin/python -m export.quickstart "$@"
