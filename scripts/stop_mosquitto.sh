#!/usr/bin/env bash
# Stop the mosquitto broker that scripts/start_mosquitto.sh started (only that PID). Safe to
# call when nothing runs.
set -euo pipefail

dir=${EDGEBIND_MQTT_DIR:-/tmp/edgebind-mqtt-$(id -u)}
exec bash "$(dirname "$0")/stop_started.sh" mosquitto "$dir/edgebind_mosquitto.pid" "$dir/port"
