#!/usr/bin/env bash
# Set up and run every test: the full suite with torch, then the runtime suite without torch.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONDONTWRITEBYTECODE=1
echo "== lint (ruff, target py310)"
.venv/bin/ruff check .
echo "== full suite (torch installed)"
.venv/bin/python -m pytest -q -p no:cacheprovider
echo "== runtime suite without torch"
bundle_dir=$(mktemp -d)
trap 'rm -rf "$bundle_dir"' EXIT
# The torch-free job embeds with a bundle exported by the full environment.
.venv/bin/python -m export bundle --checkpoint tests/fixtures/official_tiny/tiny_official.pt \
  --config tests/fixtures/official_tiny/tiny_config.json --out "$bundle_dir/tiny" --quiet
.venv-lite/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
  || { echo "torch is importable in .venv-lite: the torch-free job would prove nothing"; exit 1; }
EDGEBIND_TEST_BUNDLE="$bundle_dir/tiny" .venv-lite/bin/python -m pytest -q -p no:cacheprovider \
  -m "not torch" tests/test_layering.py tests/test_runtime_*.py tests/test_audio.py tests/test_tokenizer.py \
  tests/test_vision.py tests/test_sensor_preprocess.py tests/test_embed_cli.py
