"""Snapshots of a running :class:`runtime.pipeline.Pipeline`: events, per-stream and per-source status."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.latency import StageLatency, summary_to_dict
from runtime.sources import SourceStats
from runtime.types import Match

if TYPE_CHECKING:
    from runtime.pipeline_plan import SourceState, StreamState


@dataclass(frozen=True)
class PipelineEvent:
    """A matcher event as the pipeline emitted it.

    Attributes:
        match: the event (label, score, margin, modality, stream key as ``source_id``, times).
        source: the name (URI) of the source the stream belongs to.
        capture_ns: capture time of the window that raised it (host monotonic ns).
        emitted_ns: when the matcher raised it (host monotonic ns).
    """

    match: Match
    source: str
    capture_ns: int
    emitted_ns: int

    @property
    def latency_ms(self) -> float:
        """Sensor-to-event latency: capture of the deciding window -> event, milliseconds."""
        return (self.emitted_ns - self.capture_ns) / 1e6


@dataclass(frozen=True)
class StreamStatus:
    """One windowed stream.

    Attributes:
        key: stream key (the stream id, prefixed ``s<i>.`` when two sources share an id).
        source: its source's name.
        stream_id: the source's own stream id.
        modality: modality name.
        windows_made: windows the windower produced.
        windows_done: windows embedded and matched.
        windows_dropped: windows dropped from the queue (inference fell behind).
        windows_failed: windows that could not be preprocessed or embedded.
        events: events raised on this stream.
        top: latest top-k (label, score) of the matcher.
        latency: per-stage latency summaries of this stream.
        windower: the windower's counters (windows, gaps, dropped non-finite samples, ...).
    """

    key: str
    source: str
    stream_id: str
    modality: str
    windows_made: int
    windows_done: int
    windows_dropped: int
    windows_failed: int
    events: int
    top: tuple[tuple[str, float], ...]
    latency: dict[str, StageLatency]
    windower: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["top"] = [[label, round(float(score), 4)] for label, score in self.top]
        out["latency"] = summary_to_dict(self.latency)
        return out


def stream_status(
    src: SourceState, stream: StreamState, dropped: int, top: tuple[tuple[str, float], ...]
) -> StreamStatus:
    """A stream's snapshot from its live state, its queue drops and the matcher's top-k."""
    s = stream
    return StreamStatus(s.key, src.name, s.stream_id, s.modality.value, s.made, s.done, dropped, s.failed, s.events,
                        top, s.latency.summary(), dict(s.windower.counters))  # fmt: skip


@dataclass(frozen=True)
class SourceStatus:
    """One source.

    Attributes:
        name: its URI (or ``source<i>``).
        streams: keys of its windowed streams.
        ignored: its streams the bundle cannot embed, with the reason.
        stats: the source's own counters.
        finished: its thread ended (end of data, error or stop).
        error: the exception that killed it, if any (one line).
    """

    name: str
    streams: tuple[str, ...]
    ignored: tuple[str, ...]
    stats: SourceStats
    finished: bool
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["streams"], out["ignored"] = list(self.streams), list(self.ignored)
        out["stats"] = dataclasses.asdict(self.stats)
        return out


def source_status(src: SourceState) -> SourceStatus:
    """A source's snapshot from its live state."""
    keys = tuple(s.key for s in src.streams.values())
    return SourceStatus(src.name, keys, src.ignored, src.source.stats(), src.finished, src.error)


@dataclass(frozen=True)
class PipelineStatus:
    """The whole pipeline.

    Attributes:
        running: threads are running.
        done: the run ended (sources finished and queue drained, or stopped).
        elapsed_s: seconds since start (to the end once done).
        sources: per source.
        streams: per windowed stream.
        latency: per-stage latency over every stream.
        batches: inference steps run.
        queue_depth: windows waiting now.
        events: events raised so far.
        recent_events: the last few events, oldest first.
        errors: the last few error lines (dead sources, bad windows, encoder failures).
    """

    running: bool
    done: bool
    elapsed_s: float
    sources: tuple[SourceStatus, ...]
    streams: tuple[StreamStatus, ...]
    latency: dict[str, StageLatency]
    batches: int
    queue_depth: int
    events: int
    recent_events: tuple[PipelineEvent, ...]
    errors: tuple[str, ...]

    @property
    def windows_made(self) -> int:
        return sum(s.windows_made for s in self.streams)

    @property
    def windows_done(self) -> int:
        return sum(s.windows_done for s in self.streams)

    @property
    def windows_dropped(self) -> int:
        return sum(s.windows_dropped for s in self.streams)

    @property
    def windows_failed(self) -> int:
        return sum(s.windows_failed for s in self.streams)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counters (recent events left out)."""
        return {
            "elapsed_s": round(self.elapsed_s, 3),
            "windows": self.windows_done,
            "windows_made": self.windows_made,
            "windows_dropped": self.windows_dropped,
            "windows_failed": self.windows_failed,
            "events": self.events,
            "batches": self.batches,
            "latency_ms": summary_to_dict(self.latency),
            "sources": [s.to_dict() for s in self.sources],
            "streams": [s.to_dict() for s in self.streams],
            "errors": list(self.errors),
        }
