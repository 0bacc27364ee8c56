#!/usr/bin/env bash
# Stop the mosquitto broker that scripts/start_mosquitto.sh started (only that PID). Safe to
# call when nothing runs.
set -euo pipefail

dir=${EDGEBIND_MQTT_DIR:-/tmp/edgebind-mqtt-$(id -u)}
pid_file="$dir/edgebind_mosquitto.pid"

[ -f "$pid_file" ] || { echo "stop_mosquitto: nothing started in $dir" >&2; exit 0; }
pid=$(cat "$pid_file")
rm -f "$pid_file" "$dir/port"
# Check the PID still names a mosquitto process before signalling it (PIDs get reused).
if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "mosquitto" ]; then
  kill "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  echo "stop_mosquitto: stopped pid $pid" >&2
else
  echo "stop_mosquitto: pid $pid is not running mosquitto any more" >&2
fi
