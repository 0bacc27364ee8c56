"""What ``python -m runtime.stream`` writes: event lines (JSON or plain), fused events, the summary.

The JSON-lines schema is in :mod:`runtime.stream`'s docstring.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any, TextIO

from runtime.fusion_stage import FusedPipelineEvent, fused_event_to_dict
from runtime.pipeline_status import PipelineEvent, PipelineStatus


class EventSink:
    """Writes events (JSON lines or plain lines) from the inference thread; counts labels.

    Args:
        out: where lines go.
        as_json: JSON lines instead of plain lines.
        single: write single-sensor events (False with ``--fused-only``: they are still counted).
    """

    def __init__(self, out: TextIO, as_json: bool, single: bool = True) -> None:
        self.out = out
        self.as_json = as_json
        self.single = single
        self.t0_ns = time.monotonic_ns()
        self.labels: Counter[str] = Counter()
        self.extra: dict[str, Any] = {}  # more summary keys (fusion, memory), set by the caller
        self._lock = threading.Lock()

    def __call__(self, event: PipelineEvent) -> None:
        row = event_to_dict(event, self.t0_ns)
        with self._lock:
            self.labels[row["label"]] += 1
            if self.single:
                self._write(row, f"{row['stream']} [{row['modality']}]  (margin {row['margin']:+.3f})")

    def fused(self, event: FusedPipelineEvent) -> None:
        """Write one fused event (``FusionStage`` ``on_fused`` callback)."""
        row = fused_event_to_dict(event, self.t0_ns)
        with self._lock:
            self._write(row, "FUSED " + "+".join(f"{m} {v:.2f}" for m, v in row["per_modality"].items()))

    def _write(self, row: dict[str, Any], detail: str) -> None:
        if self.as_json:
            self.out.write(json.dumps(row) + "\n")
        else:
            self.out.write(f"{row['start_s']:8.2f} s  {row['label']:<20} {row['score']:.3f}  {detail}  "
                           f"{row['latency_ms']:.0f} ms\n")  # fmt: skip
        self.out.flush()

    def summary(self, status: PipelineStatus, ended: str) -> None:
        """Write the summary line (JSON) or a short plain summary; ``ended`` as ``supervise`` returns."""
        row: dict[str, Any] = {"type": "summary", "interrupted": ended == "interrupted", "ended": ended}
        row |= status.to_dict()
        row["events_by_label"] = dict(self.labels)
        row |= self.extra
        with self._lock:
            if self.as_json:
                self.out.write(json.dumps(row) + "\n")
            else:
                for line in summary_lines(status, ended) + extra_lines(row):
                    self.out.write(line + "\n")
            self.out.flush()


def event_to_dict(event: PipelineEvent, t0_ns: int) -> dict[str, Any]:
    """The JSON-lines form of an event (schema in :mod:`runtime.stream`)."""
    m = event.match
    return {
        "type": "event",
        "label": m.label,
        "score": round(float(m.score), 5),
        "margin": round(float(m.margin), 5),
        "modality": m.modality.value,
        "source": event.source,
        "stream": m.source_id,
        "start_ns": int(m.start_ns),
        "end_ns": int(m.end_ns),
        "start_s": round((m.start_ns - t0_ns) / 1e9, 4),
        "end_s": round((m.end_ns - t0_ns) / 1e9, 4),
        "latency_ms": round(event.latency_ms, 3),
    }


def summary_lines(status: PipelineStatus, ended: str) -> list[str]:
    """Plain-text summary: counters, per-stream counts, latency p50/p99, errors."""
    how = {"sources": "sources ended", "duration": "--duration reached"}.get(ended, ended)
    lines = [
        f"{how} after {status.elapsed_s:.1f} s: {status.windows_done} windows matched, "
        f"{status.windows_dropped} dropped, {status.windows_failed} failed, {status.events} events"
    ]
    for s in status.streams:
        lines.append(f"  {s.key:<12} {s.modality:<8} done {s.windows_done:>5}  dropped {s.windows_dropped:>4}  "
                     f"events {s.events:>3}  source {s.source}")  # fmt: skip
    for name, lat in status.latency.items():
        if lat.count:
            lines.append(f"  latency {name:<10} p50 {lat.p50_ms:8.1f} ms  p99 {lat.p99_ms:8.1f} ms  (n={lat.count})")
    lines.extend(f"  error: {e}" for e in status.errors)
    return lines


def extra_lines(row: dict[str, Any]) -> list[str]:
    """Plain-text lines for the fusion and memory parts of a summary row."""
    lines = []
    fusion = row.get("fusion")
    if fusion:
        by = ", ".join(f"{k} {v}" for k, v in sorted(fusion["events_by_label"].items())) or "none"
        lines.append(f"  fused events {fusion['events']} over {fusion['windows']} windows: {by}")
    memory = row.get("memory")
    if memory:
        failed = f", {memory['failed']} FAILED to store" if memory.get("failed") else ""
        lines.append(f"  memory {memory['path']}: {memory['stored']} windows stored this run{failed}, "
                     f"{memory['windows']} kept (capacity {memory['capacity']})")  # fmt: skip
    return lines
