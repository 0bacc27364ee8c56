#!/usr/bin/env bash
# Start (or reuse) a private PulseAudio daemon with a null sink so tests can record a real,
# clock-paced microphone stream without a sound card (reference sensors-robotics.md §2.1).
#
#   eval "$(bash scripts/start_pulseaudio.sh)"   # exports XDG_RUNTIME_DIR and EDGEBIND_MIC_SINK
#   ... tests: sounddevice device 'default'/'pulse' records the sink's monitor;
#       `paplay --device="$EDGEBIND_MIC_SINK" tone.wav` is what the "microphone" hears
#   bash scripts/stop_pulseaudio.sh               # kills only the daemon this script started
#
# Stdout carries only `export` lines; progress and errors go to stderr. Idempotent: a second
# call reuses the running daemon and (re)creates the sink if missing. The daemon lives in its
# own runtime dir (EDGEBIND_PULSE_DIR, default /tmp/edgebind-pulse-$UID), never the caller's
# desktop session. The sink runs at 48000 Hz stereo on purpose: PortAudio's ALSA `pulse`
# device reports 44100 Hz as its native rate, so captures go 48 kHz -> 44.1 kHz in PulseAudio
# and the runtime then resamples to the model's 16 kHz, and stereo exercises the mono downmix.
# Needs: apt-get install pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins
set -euo pipefail

dir=${EDGEBIND_PULSE_DIR:-/tmp/edgebind-pulse-$(id -u)}
sink=${EDGEBIND_MIC_SINK:-edgebind_mic}
rate_hz=${EDGEBIND_MIC_RATE_HZ:-48000}
pid_file="$dir/edgebind_pulseaudio.pid"

for tool in pulseaudio pactl; do
  command -v "$tool" >/dev/null || {
    echo "start_pulseaudio: $tool not found (apt-get install pulseaudio pulseaudio-utils)" >&2
    exit 1
  }
done
mkdir -p "$dir"
chmod 700 "$dir"
export XDG_RUNTIME_DIR="$dir"

if pactl info >/dev/null 2>&1; then
  echo "start_pulseaudio: reusing the daemon in $dir" >&2
else
  # Running as root in per-user mode only warns (no D-Bus, no cookie); --system is not needed.
  pulseaudio --daemonize=yes --exit-idle-time=-1 --disallow-exit --log-target=stderr 2>/dev/null || true
  for _ in $(seq 100); do pactl info >/dev/null 2>&1 && break; sleep 0.05; done
  pactl info >/dev/null 2>&1 || { echo "start_pulseaudio: daemon did not come up in $dir" >&2; exit 1; }
  # PulseAudio writes its own pid file; keep a copy that marks the daemon as ours to stop.
  cp "$dir/pulse/pid" "$pid_file"
  echo "start_pulseaudio: started pid $(cat "$pid_file") in $dir" >&2
fi

if ! pactl list short sinks | awk '{print $2}' | grep -qx "$sink"; then
  pactl load-module module-null-sink sink_name="$sink" rate="$rate_hz" channels=2 \
    sink_properties=device.description=edgebind_mic >/dev/null
fi
pactl set-default-sink "$sink"
pactl set-default-source "$sink.monitor"

printf 'export XDG_RUNTIME_DIR=%q\n' "$dir"
printf 'export EDGEBIND_MIC_SINK=%q\n' "$sink"
