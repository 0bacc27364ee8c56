"""``python -m sensors.record URI [URI ...] --seconds S --out FILE.npz``.

Records several sources at once (a thread each) into one plain ``.npz``
(format: :mod:`sensors.recording`) and prints one JSON summary line per source:
samples and measured rate per stream, dropped and errors by reason, reconnects.
A source records until S seconds of its data are in, it ends, or a wall-clock
guard of ``1.5 S + 5`` seconds passes, so a dead device never hangs the recorder.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import EdgebindError
from runtime.sources import SampleSource, SourceStats, open_source
from runtime.types import Samples
from sensors.recording import StreamData, write_recording


@dataclass
class _Capture:
    """What one source's thread collected (owned by that thread until joined)."""

    source: SampleSource
    chunks: dict[str, list[Samples]] = field(default_factory=dict)
    first_ns: int | None = None
    span_s: float = 0.0
    ended: str = ""  # "", "eof", "error: ..."


RecordResult = tuple[list[StreamData], list[dict[str, Any]], list[SourceStats]]


def record(uris: Sequence[str], seconds: float, progress: Callable[[int, float], None] | None = None) -> RecordResult:
    """Record ``seconds`` of data from every URI; returns (streams, timeline, final stats per source).

    Raises:
        EdgebindError: a source cannot be opened (the ones already open are closed).
    """
    captures: list[_Capture] = []
    try:
        for uri in uris:
            captures.append(_Capture(open_source(uri)))
        deadline = time.monotonic() + 1.5 * seconds + 5.0
        threads = [
            threading.Thread(target=_run, args=(c, seconds, deadline, i, progress), daemon=True)
            for i, c in enumerate(captures)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = [c.source.stats() for c in captures]
    finally:
        for c in captures:
            c.source.close()
    streams = [s for i, c in enumerate(captures) for s in _streams(i, c, seconds, stats[i])]
    return streams, _timeline(captures), stats


def _run(cap: _Capture, seconds: float, deadline: float, index: int, progress: Any) -> None:
    while cap.span_s < seconds and time.monotonic() < deadline:
        try:
            chunk = cap.source.read(0.1)
        except EOFError:
            cap.ended = "eof"
            return
        except Exception as exc:  # a crashing source ends its own recording, not the others
            cap.ended = f"error: {exc}"
            return
        if chunk is None or not len(chunk):
            continue
        cap.chunks.setdefault(chunk.stream_id, []).append(chunk)
        cap.first_ns = int(chunk.t_ns[0]) if cap.first_ns is None else min(cap.first_ns, int(chunk.t_ns[0]))
        cap.span_s = max(cap.span_s, (int(chunk.t_ns[-1]) - cap.first_ns) / 1e9)
        if progress:
            progress(index, min(cap.span_s / seconds, 1.0))


def _streams(index: int, cap: _Capture, seconds: float, stats: SourceStats) -> list[StreamData]:
    out = []
    limit = None if cap.first_ns is None else cap.first_ns + round(seconds * 1e9)
    for info in cap.source.streams:
        parts = cap.chunks.get(info.stream_id, [])
        t_ns = np.concatenate([p.t_ns for p in parts]) if parts else np.zeros(0, np.int64)
        values = np.concatenate([p.values for p in parts]) if parts else np.zeros((0, *info.sample_shape), info.dtype)
        dev = None
        if parts and all(p.device_t_ns is not None for p in parts):
            dev = np.concatenate([p.device_t_ns for p in parts])  # type: ignore[misc]
        keep = len(t_ns) if limit is None else int(np.searchsorted(t_ns, limit, side="right"))
        meta = {"rate_hz_measured": _rate(t_ns[:keep]), "ended": cap.ended, "stats": stats.__dict__}
        out.append(
            StreamData(
                f"s{index}.{info.stream_id}",
                index,
                cap.source.uri,
                info,
                t_ns[:keep],
                values[:keep],
                None if dev is None else dev[:keep],
                meta,
            )
        )
    return out


def _rate(t_ns: np.ndarray) -> float | None:
    if len(t_ns) < 2 or t_ns[-1] == t_ns[0]:
        return None
    return float((len(t_ns) - 1) / ((t_ns[-1] - t_ns[0]) / 1e9))


def _timeline(captures: list[_Capture]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i, c in enumerate(captures):
        get = getattr(c.source, "timeline_json", None)
        if callable(get):
            events.extend({**e, "source": i, "uri": c.source.uri} for e in json.loads(get()))
    return events


def summary_lines(streams: list[StreamData], stats: list[SourceStats], uris: Sequence[str]) -> list[str]:
    """One JSON object per source: samples and measured rate per stream, drops, errors."""
    lines = []
    for i, (uri, st) in enumerate(zip(uris, stats, strict=True)):
        mine = [s for s in streams if s.source_index == i]
        per = {s.info.stream_id: {"samples": len(s.t_ns), "rate_hz": s.meta["rate_hz_measured"]} for s in mine}
        ended = mine[0].meta["ended"] if mine else ""
        summary = {"uri": uri, "streams": per, "dropped": st.dropped, "errors": st.errors}
        summary |= {"reconnects": st.reconnects, "ended": ended or "complete"}
        lines.append(json.dumps(summary))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the recorder; returns 0, or 2 when a source cannot be opened."""
    p = argparse.ArgumentParser(prog="python -m sensors.record", description=__doc__.splitlines()[0])
    p.add_argument("uris", nargs="+", metavar="URI", help="source URIs, e.g. sim://demo?seed=1")
    p.add_argument("--seconds", type=float, required=True, help="seconds of data to record per source")
    p.add_argument("--out", type=Path, required=True, help="output .npz")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    args = p.parse_args(argv)
    if args.seconds <= 0:
        p.error("--seconds must be positive")
    try:
        streams, timeline, stats = _record_with_progress(args)
    except EdgebindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_recording(args.out, streams, timeline)
    for line in summary_lines(streams, stats, args.uris):
        print(line)
    return 0


def _record_with_progress(args: argparse.Namespace) -> Any:
    try:
        from rich.progress import Progress
    except ImportError:
        return record(args.uris, args.seconds)
    if args.quiet or not sys.stderr.isatty():
        return record(args.uris, args.seconds)
    with Progress(transient=True) as bar:
        tasks = [bar.add_task(uri[:40], total=1.0) for uri in args.uris]
        return record(args.uris, args.seconds, lambda i, frac: bar.update(tasks[i], completed=frac))


if __name__ == "__main__":
    sys.exit(main())
