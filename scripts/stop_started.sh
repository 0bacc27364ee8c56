#!/usr/bin/env bash
# Stop a helper daemon that one of our start_*.sh scripts started: only the PID in its pid file,
# and only while that PID still names the expected program (PIDs get reused). Safe to call when
# nothing runs. Used by scripts/stop_mosquitto.sh and scripts/stop_pulseaudio.sh.
#   bash scripts/stop_started.sh PROGRAM PID_FILE [FILE_TO_REMOVE ...]
set -euo pipefail

prog=$1 pid_file=$2
shift 2
tag="stop_$prog"
[ -f "$pid_file" ] || { echo "$tag: nothing started in $(dirname "$pid_file")" >&2; exit 0; }
pid=$(cat "$pid_file")
rm -f "$pid_file" "$@"
if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$prog" ]; then
  kill "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  echo "$tag: stopped pid $pid" >&2
else
  echo "$tag: pid $pid is not running $prog any more" >&2
fi
