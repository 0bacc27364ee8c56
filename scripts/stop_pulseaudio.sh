#!/usr/bin/env bash
# Stop the PulseAudio daemon that scripts/start_pulseaudio.sh started (only that PID; a daemon
# it merely reused is left alone). Safe to call when nothing runs.
set -euo pipefail

dir=${EDGEBIND_PULSE_DIR:-/tmp/edgebind-pulse-$(id -u)}
pid_file="$dir/edgebind_pulseaudio.pid"

[ -f "$pid_file" ] || { echo "stop_pulseaudio: nothing started in $dir" >&2; exit 0; }
pid=$(cat "$pid_file")
rm -f "$pid_file"
# Check the PID still names a pulseaudio process before signalling it (PIDs get reused).
if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "pulseaudio" ]; then
  kill "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  echo "stop_pulseaudio: stopped pid $pid" >&2
else
  echo "stop_pulseaudio: pid $pid is not running pulseaudio any more" >&2
fi
