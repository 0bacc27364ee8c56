#!/usr/bin/env bash
# Set up, build the demo bundle if it is missing, and run the streaming demo on the synthetic world.
set -euo pipefail
cd "$(dirname "$0")/.."
EDGEBIND_SKIP_LITE=1 bash scripts/setup.sh
[ -f bundles/demo/manifest.json ] || bash scripts/demo_bundle.sh
exec .venv/bin/python -m runtime.stream --demo "$@"
