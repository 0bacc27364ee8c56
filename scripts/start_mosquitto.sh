#!/usr/bin/env bash
# Start (or reuse) a private mosquitto broker on loopback for the MQTT tests and local runs
# (reference sensors-robotics.md §4.2).
#
#   eval "$(bash scripts/start_mosquitto.sh)"   # exports EDGEBIND_MQTT_HOST and EDGEBIND_MQTT_PORT
#   ... tests/daemon: [mqtt] host = "$EDGEBIND_MQTT_HOST", port = $EDGEBIND_MQTT_PORT
#   bash scripts/stop_mosquitto.sh               # kills only the broker this script started
#
# Stdout carries only `export` lines; progress and errors go to stderr. Idempotent: a second
# call reuses the running broker. The broker listens on 127.0.0.1 only (anonymous, no
# persistence) with its config, log and pid file in EDGEBIND_MQTT_DIR (default
# /tmp/edgebind-mqtt-$UID); the port is EDGEBIND_MQTT_PORT (default 18883).
# Needs: apt-get install mosquitto (Debian's package does not start a broker without systemd).
set -euo pipefail

dir=${EDGEBIND_MQTT_DIR:-/tmp/edgebind-mqtt-$(id -u)}
port=${EDGEBIND_MQTT_PORT:-18883}
pid_file="$dir/edgebind_mosquitto.pid"

command -v mosquitto >/dev/null || {
  echo "start_mosquitto: mosquitto not found (apt-get install mosquitto)" >&2
  exit 1
}
mkdir -p "$dir"
chmod 700 "$dir"

accepting() { (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [ -f "$pid_file" ] && [ "$(cat "/proc/$(cat "$pid_file")/comm" 2>/dev/null)" = "mosquitto" ]; then
  port=$(cat "$dir/port")
  echo "start_mosquitto: reusing broker pid $(cat "$pid_file") on 127.0.0.1:$port" >&2
else
  if accepting "$port"; then
    echo "start_mosquitto: port $port is taken by another process; set EDGEBIND_MQTT_PORT" >&2
    exit 1
  fi
  # set_tcp_nodelay: small MQTT packets (PUBACKs, control replies) go out at once, not after ~40 ms.
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n' "$port" \
    > "$dir/mosquitto.conf"
  mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
  echo $! > "$pid_file"
  echo "$port" > "$dir/port"
  for _ in $(seq 100); do accepting "$port" && break; sleep 0.05; done
  accepting "$port" || {
    echo "start_mosquitto: broker did not accept connections on 127.0.0.1:$port (log: $dir/mosquitto.log)" >&2
    exit 1
  }
  echo "start_mosquitto: started pid $(cat "$pid_file") on 127.0.0.1:$port" >&2
fi

printf 'export EDGEBIND_MQTT_HOST=%q\n' "127.0.0.1"
printf 'export EDGEBIND_MQTT_PORT=%q\n' "$port"
