"""``replay://FILE.npz``: play a recording back at real-time pace or as fast as possible.

Parameters: ``pace`` (``realtime`` | ``fast``), ``timestamps`` (``rebased``: shifted by
one constant so the recording starts at open time, relative timing exact;
``original``: verbatim, for bit-exact round trips), ``chunk_s`` (seconds of data per
delivered chunk), ``streams`` (comma-separated subset of stream ids), ``loop``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import ConfigError
from runtime.sources import Counters, SourceError, SourceStats, SourceUri
from runtime.types import Samples, StreamInfo
from sensors.recording import StreamData, read_recording

PARAMS = {
    "pace": "realtime|fast",
    "timestamps": "rebased|original",
    "chunk_s": "seconds per chunk, default 0.1",
    "streams": "comma-separated stream ids",
    "loop": "true|false",
}


@dataclass(frozen=True)
class _Chunk:
    stream: int  # index into the source's streams
    start: int
    stop: int
    due_ns: int  # data time of the chunk's last sample (original clock)


class ReplaySource:
    """A recording played back as a :class:`~runtime.sources.SampleSource`."""

    def __init__(
        self,
        path: str | Path,
        *,
        pace: str = "realtime",
        timestamps: str = "rebased",
        chunk_s: float = 0.1,
        streams: tuple[str, ...] = (),
        loop: bool = False,
        uri: str = "",
    ) -> None:
        if pace not in {"realtime", "fast"} or timestamps not in {"rebased", "original"} or chunk_s <= 0:
            raise ConfigError(f"{uri or path}: bad replay parameters; valid: " + ", ".join(PARAMS))
        self.uri = uri or f"replay://{path}"
        data, self.timeline = read_recording(path)
        self._data = _select(data, streams, self.uri)
        self.streams: tuple[StreamInfo, ...] = tuple(_named(d, data) for d in self._data)
        self._pace, self._rebase, self._loop = pace, timestamps == "rebased", loop
        self._chunks = _schedule(self._data, round(chunk_s * 1e9))
        self._counters = Counters()
        self._t0_data = min((int(d.t_ns[0]) for d in self._data if len(d.t_ns)), default=0)
        self._start()

    @classmethod
    def from_uri(cls, uri: SourceUri) -> ReplaySource:
        """Build from ``replay://FILE.npz?pace=...``."""
        uri.check_params(PARAMS)
        wanted = tuple(s for s in uri.get("streams", "").split(",") if s)
        return cls(
            uri.target,
            pace=uri.get("pace", "realtime"),
            timestamps=uri.get("timestamps", "rebased"),
            chunk_s=uri.get("chunk_s", 0.1, float),
            streams=wanted,
            loop=uri.get("loop", False, bool),
            uri=uri.text,
        )

    def _start(self) -> None:
        self._next = 0
        self._t0_wall = time.monotonic_ns()
        self._offset = self._t0_wall - self._t0_data if self._rebase else 0

    def read(self, timeout_s: float) -> Samples | None:
        """Next chunk (in data-time order across streams); EOFError at the end unless looping."""
        if self._next >= len(self._chunks):
            if not self._loop or not self._chunks:
                raise EOFError(f"{self.uri}: end of recording")
            self._start()
        chunk = self._chunks[self._next]
        if self._pace == "realtime":
            wait_ns = self._t0_wall + (chunk.due_ns - self._t0_data) - time.monotonic_ns()
            if wait_ns > timeout_s * 1e9:
                time.sleep(max(timeout_s, 0.0))
                return None
            if wait_ns > 0:
                time.sleep(wait_ns / 1e9)
        self._next += 1
        return self._samples(chunk)

    def _samples(self, chunk: _Chunk) -> Samples:
        d = self._data[chunk.stream]
        sl = slice(chunk.start, chunk.stop)
        t_ns: NDArray[np.int64] = d.t_ns[sl] + np.int64(self._offset)
        dev = None if d.device_t_ns is None else d.device_t_ns[sl]
        self._counters.delivered(self.streams[chunk.stream].stream_id, chunk.stop - chunk.start)
        return Samples(self.streams[chunk.stream].stream_id, d.info.modality, t_ns, d.values[sl], dev)

    def timeline_json(self) -> str:
        """The recording's ground-truth events (JSON list), so re-recording a replay keeps them."""
        return json.dumps(self.timeline)

    def stats(self) -> SourceStats:
        return self._counters.snapshot()

    def close(self) -> None:
        self._next = len(self._chunks)
        self._loop = False

    def __enter__(self) -> ReplaySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _select(data: list[StreamData], wanted: tuple[str, ...], uri: str) -> list[StreamData]:
    if not data:
        raise SourceError(f"{uri}: the recording holds no streams")
    if not wanted:
        return data
    names = {d.info.stream_id: d for d in data} | {d.key: d for d in data}
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ConfigError(f"{uri}: no stream {missing[0]!r} in the recording; it has: {', '.join(sorted(names))}")
    return [names[w] for w in wanted]


def _named(d: StreamData, everything: list[StreamData]) -> StreamInfo:
    """The recorded StreamInfo; the stream id becomes the file key when ids repeat across sources."""
    clash = sum(1 for o in everything if o.info.stream_id == d.info.stream_id) > 1
    extra: dict[str, Any] = {**d.info.extra, "recorded_uri": d.uri}
    return replace(d.info, stream_id=d.key if clash else d.info.stream_id, extra=extra)


def _schedule(data: list[StreamData], chunk_ns: int) -> list[_Chunk]:
    """Cut every stream into chunks of ``chunk_ns`` of data time, merged in time order."""
    chunks: list[_Chunk] = []
    for i, d in enumerate(data):
        if not len(d.t_ns):
            continue
        rel = d.t_ns - d.t_ns[0]
        edges = np.searchsorted(rel, np.arange(chunk_ns, int(rel[-1]) + chunk_ns + 1, chunk_ns), side="left")
        start = 0
        for stop in [*edges.tolist(), len(d.t_ns)]:
            if stop > start:
                chunks.append(_Chunk(i, start, stop, int(d.t_ns[stop - 1])))
                start = stop
    chunks.sort(key=lambda c: (c.due_ns, c.stream))
    return chunks
