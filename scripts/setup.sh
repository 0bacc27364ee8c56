#!/usr/bin/env bash
# Create the project's virtual environments (idempotent).
#   .venv       full: the export extra (torch CPU, onnx) + runtime + sensors + dev tools
#   .venv-lite  no torch: runtime + sensors, proves the device side never needs torch
# System packages (Debian): PortAudio and PulseAudio for the microphone tests, libusb
# for pyrealsense2, socat for serial tests, mosquitto (MQTT broker) for the daemon's sink
# tests. Installed when missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
quiet() { "$@" >/dev/null 2>&1 || "$@"; }   # rerun loudly if it failed

APT_PACKAGES="libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins libusb-1.0-0 socat mosquitto"
missing=""
for pkg in $APT_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing system packages:$missing" >&2
    quiet apt-get update -q
    DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -q --no-install-recommends $missing
  else
    echo "warning: missing system packages:$missing (microphone/RealSense/MQTT tests need them)" >&2
  fi
fi

EXTRAS="runtime,sensors,cameras,realsense,plots,daemon"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
quiet .venv/bin/pip install -q --upgrade pip
# torch==2.13.0 resolves to the CPU build that ships on these machines; pin it so pip never
# pulls a multi-GB CUDA build.
quiet .venv/bin/pip install -q "torch==2.13.0" -e ".[export,$EXTRAS,dev]"
# Only for its MIT-licensed BPE vocabulary file (bundles carry it); never imported.
quiet .venv/bin/pip install -q --no-deps "open-clip-torch==3.3.0"

if [ "${EDGEBIND_SKIP_LITE:-0}" != "1" ]; then
  if [ ! -x .venv-lite/bin/python ]; then
    "$PY" -m venv .venv-lite
  fi
  quiet .venv-lite/bin/pip install -q --upgrade pip
  quiet .venv-lite/bin/pip install -q -e ".[$EXTRAS,calibrate,dev]"
fi
