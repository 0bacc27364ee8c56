#!/usr/bin/env bash
# Create the project's virtual environments (idempotent).
#   .venv       full: the export extra (torch CPU, onnx) + the runtime + dev tools
#   .venv-lite  runtime only (numpy, onnxruntime, pillow, ftfy, regex): proves no torch is needed
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
quiet() { "$@" >/dev/null 2>&1 || "$@"; }   # rerun loudly if it failed

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
quiet .venv/bin/pip install -q --upgrade pip
# torch==2.13.0 resolves to the CPU build that ships on these machines; pin it so pip never
# pulls a multi-GB CUDA build.
quiet .venv/bin/pip install -q "torch==2.13.0" -e ".[export,dev]"
# Only for its MIT-licensed BPE vocabulary file (bundles carry it); never imported.
quiet .venv/bin/pip install -q --no-deps "open-clip-torch==3.3.0"

if [ "${EDGEBIND_SKIP_LITE:-0}" != "1" ]; then
  if [ ! -x .venv-lite/bin/python ]; then
    "$PY" -m venv .venv-lite
  fi
  quiet .venv-lite/bin/pip install -q --upgrade pip
  quiet .venv-lite/bin/pip install -q -e ".[runtime,dev]"
fi
