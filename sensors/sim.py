"""``sim://SCENARIO?seed=N``: the synthetic world as a source, and :func:`generate` for whole recordings.

Time-aligned IMU (400 Hz), audio (16 kHz), depth (10 Hz), thermal (9 Hz), RGB (2 Hz) and a
caption (1 Hz) from scripted scenes with a ground-truth timeline (:mod:`sensors.sim_world`).
numpy + ``runtime`` only; never torch.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from runtime.errors import ConfigError
from runtime.sources import Counters, SourceStats, SourceUri
from runtime.types import Samples, StreamInfo
from sensors.sim_signals import SimStreamSpec, StreamSynth, sample_count, sample_offsets_ns, stream_specs
from sensors.sim_world import SCENARIOS, Event, build_timeline, check_scenario, default_duration_s, timeline_to_json

PARAMS = {
    "seed": "integer, default 0",
    "duration_s": "seconds of data; default one cycle of the scenario's script",
    "pace": "realtime|fast",
    "chunk_s": "seconds per chunk, default 0.1",
    "streams": "comma-separated subset of imu,audio,depth,thermal,rgb,caption",
}
_ALIASES = {"vision": "rgb", "text": "caption"}  # modality names accepted in ``streams=``


@dataclass(frozen=True)
class SimStream:
    """One stream of a :class:`SimRecording`.

    Attributes:
        info: the stream's description.
        t_ns: (N,) int64 sample times, ns from the start (the sim clock of the timeline).
        values: (N, *info.sample_shape) in ``info.units`` (see :class:`~runtime.types.Samples`).
    """

    info: StreamInfo
    t_ns: NDArray[np.int64]
    values: NDArray[np.generic]


@dataclass(frozen=True)
class SimRecording:
    """A whole synthetic session, for training, calibration and tests.

    Attributes:
        scenario: scenario name.
        seed: its seed.
        duration_s: length, seconds.
        timeline: ground-truth events (times in seconds on the streams' clock).
        streams: the streams, keyed by stream id.
    """

    scenario: str
    seed: int
    duration_s: float
    timeline: tuple[Event, ...]
    streams: dict[str, SimStream]


def _select(wanted: tuple[str, ...], where: str) -> tuple[SimStreamSpec, ...]:
    specs = stream_specs()
    if not wanted:
        return specs
    ids = [_ALIASES.get(w, w) for w in wanted]
    valid = {s.info.stream_id for s in specs}
    for w, sid in zip(wanted, ids, strict=True):
        if sid not in valid:
            raise ConfigError(f"{where}: unknown sim stream {w!r}; valid: {', '.join(s.info.stream_id for s in specs)}")
    return tuple(s for s in specs if s.info.stream_id in ids)


def generate(
    scenario: str, seed: int = 0, duration_s: float | None = None, streams: tuple[str, ...] = ()
) -> SimRecording:
    """Synthesise a whole session in memory (bit-identical to what ``sim://`` delivers).

    Args:
        scenario: one of :data:`sensors.sim_world.SCENARIOS`.
        seed: same seed, same arrays; another seed, other arrays.
        duration_s: seconds; default one cycle of the scenario's script.
        streams: stream ids to make (default all).

    Raises:
        ConfigError: unknown scenario or stream, non-positive duration.
    """
    check_scenario(scenario)
    duration_s = default_duration_s(scenario) if duration_s is None else float(duration_s)
    timeline = build_timeline(scenario, seed, duration_s)
    out = {}
    for spec in _select(streams, f"sim://{scenario}"):
        n = sample_count(spec.rate_hz, duration_s)
        synth = StreamSynth(spec, timeline, seed, n)
        out[spec.info.stream_id] = SimStream(spec.info, sample_offsets_ns(spec.rate_hz, 0, n), synth.samples(0, n))
    return SimRecording(scenario, seed, duration_s, timeline, out)


class SimSource:
    """The synthetic world as a :class:`~runtime.sources.SampleSource`.

    Chunks of every stream come interleaved in time order (by their last sample's time).
    ``pace="realtime"`` hands each chunk out when its last sample is due on the wall clock;
    ``"fast"`` as fast as it is asked. Either way ``t_ns`` is ``time.monotonic_ns()`` at
    open plus the sample's offset, and ``device_t_ns`` is the offset (the timeline's clock).
    """

    def __init__(self, scenario: str, *, seed: int = 0, duration_s: float | None = None, pace: str = "realtime",
                 chunk_s: float = 0.1, streams: tuple[str, ...] = (), uri: str = "") -> None:  # fmt: skip
        self.uri = uri or f"sim://{scenario}?seed={seed}"
        check_scenario(scenario)
        if pace not in {"realtime", "fast"} or not chunk_s > 0:
            raise ConfigError(f"{self.uri}: pace must be realtime|fast and chunk_s > 0; valid: {', '.join(PARAMS)}")
        self.duration_s = default_duration_s(scenario) if duration_s is None else float(duration_s)
        self.timeline: tuple[Event, ...] = build_timeline(scenario, seed, self.duration_s)
        specs = _select(streams, self.uri)
        self.streams: tuple[StreamInfo, ...] = tuple(s.info for s in specs)
        self._synths = [StreamSynth(s, self.timeline, seed, sample_count(s.rate_hz, self.duration_s)) for s in specs]
        self._pace, self._chunk_ns = pace, round(chunk_s * 1e9)
        self._counters = Counters()
        self._t0_ns = time.monotonic_ns()
        self._next = [0] * len(specs)  # next sample index per stream
        self._heap: list[tuple[int, int]] = []  # (due offset ns, stream index)
        for i in range(len(specs)):
            self._push(i)

    @classmethod
    def from_uri(cls, uri: SourceUri) -> SimSource:
        """Build from ``sim://SCENARIO?seed=N&duration_s=S&pace=fast&chunk_s=C&streams=imu,audio``."""
        uri.check_params(PARAMS)
        if uri.target not in SCENARIOS:
            raise ConfigError(f"{uri.text}: unknown sim scenario {uri.target!r}; valid: {', '.join(SCENARIOS)}")
        duration_s = uri.get("duration_s", None, float)
        return cls(uri.target, seed=uri.get("seed", 0, int), duration_s=duration_s, pace=uri.get("pace", "realtime"),
                   chunk_s=uri.get("chunk_s", 0.1, float),
                   streams=tuple(s for s in uri.get("streams", "").split(",") if s), uri=uri.text)  # fmt: skip

    def _chunk_end(self, i: int) -> int:
        """One past the last sample of stream ``i``'s next chunk (the chunk holding its next sample)."""
        synth, n0 = self._synths[i], self._next[i]
        rate = synth.spec.rate_hz
        j = int(sample_offsets_ns(rate, n0, n0 + 1)[0]) // self._chunk_ns
        return min(-(-((j + 1) * self._chunk_ns * rate) // 1_000_000_000), synth.n_total)

    def _push(self, i: int) -> None:
        if self._next[i] < self._synths[i].n_total:
            last = self._chunk_end(i) - 1
            heapq.heappush(self._heap, (int(sample_offsets_ns(self._synths[i].spec.rate_hz, last, last + 1)[0]), i))

    @property
    def t0_ns(self) -> int:
        """Host ``time.monotonic_ns()`` of sample 0 (the start of the timeline)."""
        return self._t0_ns

    def read(self, timeout_s: float) -> Samples | None:
        """Next chunk of any stream in time order; None if not due within ``timeout_s``; EOFError at the end."""
        if not self._heap:
            raise EOFError(f"{self.uri}: end of the synthetic session ({self.duration_s:g} s)")
        due_ns, i = self._heap[0]
        if self._pace == "realtime":
            wait_ns = self._t0_ns + due_ns - time.monotonic_ns()
            if wait_ns > timeout_s * 1e9:
                time.sleep(max(timeout_s, 0.0))
                return None
            if wait_ns > 0:
                time.sleep(wait_ns / 1e9)
        heapq.heappop(self._heap)
        synth, n0 = self._synths[i], self._next[i]
        n1 = self._chunk_end(i)
        self._next[i] = n1
        self._push(i)
        offsets = sample_offsets_ns(synth.spec.rate_hz, n0, n1)
        self._counters.delivered(synth.spec.info.stream_id, n1 - n0)
        info = synth.spec.info
        return Samples(info.stream_id, info.modality, offsets + np.int64(self._t0_ns), synth.samples(n0, n1), offsets)

    def timeline_json(self) -> str:
        """The ground-truth events as JSON (seconds on the sim clock plus host ``start_ns``/``end_ns``)."""
        return timeline_to_json(self.timeline, self._t0_ns)

    def stats(self) -> SourceStats:
        return self._counters.snapshot()

    def close(self) -> None:
        self._heap = []

    def __enter__(self) -> SimSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
