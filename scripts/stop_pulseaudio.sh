#!/usr/bin/env bash
# Stop the PulseAudio daemon that scripts/start_pulseaudio.sh started (only that PID; a daemon
# it merely reused is left alone). Safe to call when nothing runs.
set -euo pipefail

dir=${EDGEBIND_PULSE_DIR:-/tmp/edgebind-pulse-$(id -u)}
exec bash "$(dirname "$0")/stop_started.sh" pulseaudio "$dir/edgebind_pulseaudio.pid"
