"""The daemon's status document: pipeline counters, per-sensor health, sinks, prompts.

Sensor ``state`` (per source, from its :class:`~runtime.sources.SourceStats` and thread):

- ``ok``: delivering samples;
- ``stale``: no new samples for ``stale_s`` seconds (a quiet or stuck device);
- ``disconnected``: more ``errors["disconnect"]`` than ``reconnects`` (the source is reopening it);
- ``ended``: its data ended (replay/sim end); ``failed``: its thread died with ``error``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from runtime.pipeline_status import PipelineStatus, SourceStatus

STALE_S = 5.0


class SensorWatch:
    """Remembers when each source last delivered new samples (monotonic seconds)."""

    def __init__(self, stale_s: float = STALE_S) -> None:
        self.stale_s = stale_s
        self._seen: dict[str, tuple[int, float]] = {}  # name -> (samples total, when it last grew)

    def state(self, src: SourceStatus, now_s: float) -> str:
        """The sensor state of ``src`` (see the module docstring)."""
        total = sum(src.stats.samples.values())
        last_total, since = self._seen.get(src.name, (-1, now_s))
        if total != last_total:
            since = now_s
        self._seen[src.name] = (total, since)
        if src.finished:
            return "failed" if src.error else "ended"
        if src.stats.errors.get("disconnect", 0) > src.stats.reconnects:
            return "disconnected"
        return "stale" if now_s - since >= self.stale_s else "ok"


def sensors_status(status: PipelineStatus, names: Mapping[str, str], watch: SensorWatch) -> list[dict[str, Any]]:
    """Per source: name, uri, state, streams, stats (samples, dropped, errors, reconnects), error."""
    now_s = time.monotonic()
    out = []
    for src in status.sources:
        out.append({
            "name": names.get(src.name) or src.name,
            "uri": src.name,
            "state": watch.state(src, now_s),
            "streams": list(src.streams),
            "stats": dataclasses.asdict(src.stats),
            "error": src.error,
        })  # fmt: skip
    return out


def status_line(status: PipelineStatus, sensors: list[dict[str, Any]], sinks: Mapping[str, Mapping[str, Any]]) -> str:
    """A one-line summary for systemd's STATUS= and the journal."""
    bad = [f"{s['name']} {s['state']}" for s in sensors if s["state"] != "ok"]
    sink_part = " ".join(f"{n}:{'up' if s['open'] and not s['last_error'] else 'down'}({s['backlog']})"
                         for n, s in sinks.items())  # fmt: skip
    return (f"streaming {len(sensors)} sources: {status.windows_done} windows, {status.events} events, "
            f"{status.windows_dropped} dropped, {status.windows_failed} failed"
            + (f"; {', '.join(bad)}" if bad else "") + (f"; sinks {sink_part}" if sink_part else ""))  # fmt: skip
