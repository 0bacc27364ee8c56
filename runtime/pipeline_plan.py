"""Pipeline settings and the plan of its streams: which source stream feeds which windower.

A source stream is windowed when the bundle has its modality's encoder (text streams
never are); the others are listed as ignored. A source with no windowed stream at all is
an error raised before any thread starts, naming the source, its modalities and the
bundle's encoders. Stream keys are the streams' own ids, prefixed ``s<i>.`` (``i`` the
source's position) when two sources share an id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime.config_util import config_from_dict, config_to_dict
from runtime.errors import BundleError, ConfigError
from runtime.latency import LatencyRecorder
from runtime.manifest import ModelManifest
from runtime.sources import SampleSource, open_source
from runtime.types import Modality
from runtime.windowing import WindowConfig, Windower


@dataclass(frozen=True)
class PipelineConfig:
    """Engine settings.

    Attributes:
        queue_windows: capacity of the window queue (windows, all streams together).
        batch_max: most windows per inference step (all modalities together).
        batch_deadline_s: longest wait for a batch to fill once it has one window, seconds.
        backend: embedder backend name (``"ort"``).
        precision: which artifact the backend runs (``"fp32"``, ``"fp16"``, ``"int8"``).
        threads: backend intra-op threads (0: backend default).
        windows: per modality name, overrides for ``WindowConfig.from_spec``.
        lossless: block sources instead of dropping windows (finite fast sources only:
            a live sensor must never be blocked).
        read_timeout_s: longest a source read blocks (bounds :meth:`Pipeline.stop` latency).
        recent_events: events kept for the status snapshot.
        closed_events: closed events (final extents) kept for :meth:`Pipeline.closed_events`.
        latency_capacity: reservoir size per latency stage.
    """

    queue_windows: int = 64
    batch_max: int = 8
    batch_deadline_s: float = 0.05
    backend: str = "ort"
    precision: str = "fp32"
    threads: int = 0
    windows: dict[str, dict[str, Any]] = field(default_factory=dict)
    lossless: bool = False
    read_timeout_s: float = 0.1
    recent_events: int = 20
    closed_events: int = 4096
    latency_capacity: int = 1024

    def __post_init__(self) -> None:
        counts = (self.queue_windows, self.batch_max, self.recent_events, self.closed_events, self.latency_capacity)
        if min(counts) < 1:
            raise ConfigError(
                "pipeline: queue_windows, batch_max, recent_events, closed_events and latency_capacity must be >= 1"
            )
        if self.batch_deadline_s < 0 or not self.read_timeout_s > 0 or self.threads < 0:
            raise ConfigError("pipeline: batch_deadline_s >= 0, read_timeout_s > 0 and threads >= 0 required")
        for name in self.windows:
            Modality.parse(name)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        """Strict parse (unknown keys and wrong types raise one-line ConfigError)."""
        return config_from_dict(cls, data, "pipeline")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return config_to_dict(self)


@dataclass
class StreamState:
    """A windowed stream (mutable counters: ``made`` written by its source thread, the rest by
    the inference thread; read by status snapshots)."""

    key: str
    source: str
    stream_id: str
    modality: Modality
    windower: Windower
    latency: LatencyRecorder
    made: int = 0
    done: int = 0
    failed: int = 0
    events: int = 0


@dataclass
class SourceState:
    """One source and its thread's state."""

    name: str
    source: SampleSource
    streams: dict[str, StreamState]  # by the source's own stream id
    ignored: tuple[str, ...]
    finished: bool = False
    error: str | None = None
    thread: threading.Thread | None = None


def open_all(manifest: ModelManifest, given: Sequence[str | SampleSource], cfg: PipelineConfig) -> list[SourceState]:
    """Open URIs, plan every source's streams; closes what it opened when anything fails."""
    opened: list[SampleSource] = []
    try:
        sources = []
        for item in given:
            sources.append(open_source(item) if isinstance(item, str) else item)
            if isinstance(item, str):
                opened.append(sources[-1])
        ids = [info.stream_id for s in sources for info in s.streams]
        return [plan_source(manifest, s, i, cfg, ids.count) for i, s in enumerate(sources)]
    except BaseException:
        for s in opened:
            s.close()
        raise


def plan_source(
    manifest: ModelManifest, source: SampleSource, index: int, cfg: PipelineConfig, id_count: Callable[[str], int]
) -> SourceState:
    """Windowers for the source's streams the bundle can embed; a clear error if there are none."""
    name = getattr(source, "uri", "") or f"source{index}"
    streams: dict[str, StreamState] = {}
    ignored = []
    for info in source.streams:
        mod = info.modality
        if mod is Modality.TEXT or mod not in manifest.modalities:
            why = "text streams are not windowed" if mod is Modality.TEXT else "no encoder in the bundle"
            ignored.append(f"{info.stream_id} ({mod.value}: {why})")
            continue
        key = info.stream_id if id_count(info.stream_id) == 1 else f"s{index}.{info.stream_id}"
        wcfg = WindowConfig.from_spec(manifest.spec(mod), cfg.windows.get(mod.value, {}))
        windower = Windower(info, wcfg, stream_id=key)
        streams[info.stream_id] = StreamState(key, name, info.stream_id, mod, windower,
                                          LatencyRecorder(capacity=cfg.latency_capacity))  # fmt: skip
    if not streams:
        have = ", ".join(f"{i.stream_id}: {i.modality.value}" for i in source.streams) or "no streams"
        bundle = ", ".join(m.value for m in manifest.modalities if m is not Modality.TEXT) or "none"
        raise BundleError(
            f"source {name} ({have}) has no stream the bundle {manifest.root} can embed (bundle encoders: {bundle})"
        )
    return SourceState(name, source, streams, tuple(ignored))
