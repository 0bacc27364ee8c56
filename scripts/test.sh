#!/usr/bin/env bash
# Set up and run every test: the full suite with torch, then everything that does not
# need torch again in an environment without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONDONTWRITEBYTECODE=1
echo "== lint (ruff, target py310)"
.venv/bin/ruff check .

# A real microphone path for the tests: PulseAudio with a null sink (stopped on exit).
eval "$(bash scripts/start_pulseaudio.sh)"
# An MQTT broker on loopback for the sink tests (they start private ones where they need to kill it).
eval "$(bash scripts/start_mosquitto.sh)"
bundle_dir=$(mktemp -d)
cleanup() { bash scripts/stop_pulseaudio.sh || true; bash scripts/stop_mosquitto.sh || true; rm -rf "$bundle_dir"; }
trap cleanup EXIT

# The streaming demo's bundle, so the README's first command is tested too.
[ -f bundles/demo/manifest.json ] || bash scripts/demo_bundle.sh

echo "== full suite (torch installed)"
.venv/bin/python -m pytest -q -p no:cacheprovider

echo "== every test that does not need torch, in .venv-lite (no torch installed)"
.venv-lite/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
  || { echo "torch is importable in .venv-lite: the torch-free job would prove nothing"; exit 1; }
# The torch-free job embeds with a bundle exported by the full environment.
.venv/bin/python -m export bundle --checkpoint tests/fixtures/official_tiny/tiny_official.pt \
  --config tests/fixtures/official_tiny/tiny_config.json --out "$bundle_dir/tiny" --quiet
EDGEBIND_SOAK_S=30 EDGEBIND_TEST_BUNDLE="$bundle_dir/tiny" .venv-lite/bin/python -m pytest -q -p no:cacheprovider -m "not torch"
