"""Live microphone source ``mic://`` over sounddevice/PortAudio (imported lazily; never torch).

Captures at the device's native rate and channel count and delivers MONO float32 PCM
(the mean of the captured channels) with host ``time.monotonic_ns()`` timestamps.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import ConfigError
from runtime.sources import Counters, SourceError, SourceStats, SourceUri
from runtime.types import Modality, Samples, StreamInfo

_LOG = logging.getLogger(__name__)
STREAM_ID = "audio"
_MIN_STALL_S = 0.5  # tiny blocks must not turn scheduling hiccups into disconnects
_RISE_NS = 5_000_000  # the timestamp anchor rises only past this much slack (5 ms): drift, lost samples
PARAMS = {
    "rate": "sample rate in Hz; default the device's native rate",
    "channels": "channels captured then averaged to mono; default min(device max, 2)",
    "block_ms": "callback block length in ms; default 20",
    "queue_s": "seconds of audio buffered before the oldest is dropped; default 2",
}


@dataclass(frozen=True)
class MicrophoneConfig:
    """How to open a microphone.

    Attributes:
        device: ``"default"``, a PortAudio device index as text, or a case-insensitive
            substring of an input device name.
        rate_hz: capture rate in Hz; None = the device's ``default_samplerate``.
        channels: channels captured (averaged to mono); None = min(device max, 2).
        block_ms: callback block length in milliseconds.
        queue_s: seconds of audio kept when nobody reads; older blocks are dropped.
        stall_blocks: blocks without a callback (at least 0.5 s) after which the device counts as gone.
        startup_grace_s: extra time a freshly opened stream may take to deliver its first block.
        backoff_max_s: cap of the exponential reopen backoff in seconds.
    """

    device: str = "default"
    rate_hz: float | None = None
    channels: int | None = None
    block_ms: float = 20.0
    queue_s: float = 2.0
    stall_blocks: int = 25
    startup_grace_s: float = 5.0
    backoff_max_s: float = 2.0

    @classmethod
    def from_uri(cls, uri: SourceUri) -> MicrophoneConfig:
        """Build the config from ``mic://<device>?rate=&channels=&block_ms=&queue_s=``."""
        uri.check_params(PARAMS)
        config = cls(
            device=uri.target.strip("/") or "default",
            rate_hz=uri.get("rate", None, float),
            channels=uri.get("channels", None, int),
            block_ms=uri.get("block_ms", 20.0, float),
            queue_s=uri.get("queue_s", 2.0, float),
        )
        for name, value in (("rate", config.rate_hz), ("channels", config.channels)):
            if value is not None and value <= 0:
                raise ConfigError(f"{uri.text}: {name} must be positive, got {value}")
        if not 1.0 <= config.block_ms <= 1000.0 or config.queue_s <= 0:
            raise ConfigError(f"{uri.text}: need 1 <= block_ms <= 1000 and queue_s > 0")
        return config


def import_sounddevice() -> ModuleType:
    """Import sounddevice, or raise one-line SourceError naming the pip/apt package to install."""
    try:
        import sounddevice
    except ImportError:
        raise SourceError("mic://: the sounddevice library is missing (pip install sounddevice)") from None
    except OSError as exc:  # sounddevice loads the system PortAudio at import
        raise SourceError(f"mic://: {exc} (apt-get install libportaudio2)") from None
    return sounddevice


def input_devices(sd: ModuleType) -> list[dict[str, Any]]:
    """PortAudio's input devices as sounddevice dicts (``index``, ``name``, ``max_input_channels``, ...)."""
    return [dict(d) for d in sd.query_devices() if d["max_input_channels"] > 0]


def resolve_device(sd: ModuleType, spec: str) -> dict[str, Any]:
    """Find the input device named by ``spec`` (``default``, an index, or a name substring).

    Raises:
        SourceError: no (or several) input devices match; the message lists them all.
    """
    inputs = input_devices(sd)
    listing = "; ".join(f"{d['index']} {d['name']!r}" for d in inputs) or "none (is an audio server running?)"
    if spec == "default":
        index = sd.default.device[0]
        matches = [d for d in inputs if d["index"] == index] or inputs[:1]
    elif spec.isdigit():
        matches = [d for d in inputs if d["index"] == int(spec)]
    else:
        exact = [d for d in inputs if d["name"].lower() == spec.lower()]
        matches = exact or [d for d in inputs if spec.lower() in d["name"].lower()]
    if len(matches) != 1:
        what = "no input device matches" if not matches else f"{len(matches)} input devices match"
        raise SourceError(f"mic://{spec}: {what} {spec!r}; available inputs: {listing}")
    return matches[0]


class _SampleClock:
    """Host timestamps of consecutive audio blocks: a sample counter on a lower-envelope anchor.

    Sample ``k`` (counted since the stream opened) is stamped ``anchor + k / rate``.
    A block cannot arrive before its last sample was captured, so every block bounds
    ``anchor <= arrival - k_last / rate`` (``arrival`` = ``time.monotonic_ns()`` on
    entry to the callback), i.e. a block is taken to start one block duration before it
    arrived. The anchor follows the tightest bound at once, which filters delivery
    jitter (always late), and every ``window_s`` it rises to the tightest bound of that
    window if that is more than ``_RISE_NS`` above it, which tracks clock drift and
    samples lost to overflows (re-anchored within one window) without chasing jitter.
    Stamps are clamped to stay strictly increasing, also across reopenings.

    PortAudio's own time info (``currentTime - inputBufferAdcTime``) is not used: through
    the ALSA ``pulse`` plugin it reported 0.74 s, then 0.02 s, with no matching burst of
    data, so stamps are late by the host API's buffering (about one ALSA period) instead.
    """

    def __init__(self, rate_hz: float, window_s: float = 1.0) -> None:
        self._period_ns = 1e9 / rate_hz
        self._window_ns = window_s * 1e9
        self._last_ns = -1
        self.reset()

    def reset(self) -> None:
        """Start a new sample count (a reopened stream); stamps stay increasing."""
        self._k = 0
        self._anchor_ns: float | None = None
        self._window_min_ns = np.inf
        self._window_start_ns = 0

    def block_start(self, arrival_ns: int, n: int) -> int:
        """Timestamp (monotonic ns) of the first of ``n`` samples that arrived at ``arrival_ns``."""
        bound_ns = arrival_ns - (self._k + n - 1) * self._period_ns
        if self._anchor_ns is None:
            self._anchor_ns, self._window_start_ns = bound_ns, arrival_ns
        self._anchor_ns = min(self._anchor_ns, bound_ns)
        self._window_min_ns = min(self._window_min_ns, bound_ns)
        if arrival_ns - self._window_start_ns >= self._window_ns:
            if self._window_min_ns - self._anchor_ns > _RISE_NS:
                self._anchor_ns = float(self._window_min_ns)
            self._window_min_ns, self._window_start_ns = np.inf, arrival_ns
        start_ns = max(round(self._anchor_ns + self._k * self._period_ns), self._last_ns + 1)
        self._k += n
        self._last_ns = start_ns + round((n - 1) * self._period_ns)
        return start_ns

    def times(self, start_ns: int, n: int) -> NDArray[np.int64]:
        """(n,) int64 monotonic ns of ``n`` samples from ``start_ns``."""
        return start_ns + np.round(np.arange(n) * self._period_ns).astype(np.int64)


class MicrophoneSource:
    """A live microphone as a :class:`runtime.sources.SampleSource` with one ``"audio"`` stream.

    Values are (N, 1) float32 PCM in [-1, 1]: the mean of the captured channels. The
    PortAudio callback pushes blocks into a bounded queue (``queue_s``; when full the
    oldest block is dropped, counted in ``dropped["queue_overflow"]`` in samples).
    PortAudio input overflows count in ``errors["input_overflow"]``. A supervisor thread
    watches the stream: a stream error, or no callback for ``stall_blocks`` blocks,
    counts ``errors["disconnect"]`` (logged once per outage) and the device is reopened
    with exponential backoff capped at ``backoff_max_s`` (each success counts in
    ``reconnects``). Reopening re-initialises PortAudio to refresh the device list,
    which also ends any other PortAudio stream of this process.
    """

    def __init__(self, config: MicrophoneConfig, uri: str | None = None) -> None:
        """Open and start the device.

        Raises:
            SourceError: the library is missing, no input device matches (the message
                lists them), or the device rejects the rate/channels.
        """
        self.uri = uri or f"mic://{config.device}"
        self._config = config
        self._sd = import_sounddevice()
        device = resolve_device(self._sd, config.device)
        self._rate_hz = float(config.rate_hz or device["default_samplerate"])
        self._channels = config.channels or min(int(device["max_input_channels"]), 2)
        self._block_s = config.block_ms / 1000.0
        self._block_samples = max(1, round(self._rate_hz * self._block_s))
        self._max_queued = max(self._block_samples, round(config.queue_s * self._rate_hz))
        self._counters = Counters()
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[int, NDArray[np.float32]]] = collections.deque()
        self._queued = 0
        self._clock = _SampleClock(self._rate_hz)
        self._last_callback_ns = 0
        self._stream: Any = None
        self._stop = threading.Event()
        self._open(device)  # first open fails loudly; later failures are retried
        self.streams = (self._stream_info(device),)
        self._supervisor = threading.Thread(target=self._supervise, name=f"mic-{config.device}", daemon=True)
        self._supervisor.start()

    @classmethod
    def from_uri(cls, uri: SourceUri) -> MicrophoneSource:
        """Open ``mic://default``, ``mic://<name substring>`` or ``mic://<index>``."""
        return cls(MicrophoneConfig.from_uri(uri), uri.text)

    def _stream_info(self, device: dict[str, Any]) -> StreamInfo:
        extra: dict[str, object] = {
            "device": device["name"],
            "device_index": device["index"],
            "captured_channels": self._channels,
            "block_ms": self._config.block_ms,
        }
        return StreamInfo(STREAM_ID, Modality.AUDIO, "pcm", self._rate_hz, ("mono",), (1,), "float32", extra)

    def _open(self, device: dict[str, Any]) -> None:
        """Open and start a PortAudio input stream on ``device`` (raises SourceError)."""
        sd = self._sd
        with self._cond:  # the null sink of an idle PulseAudio delivers its first block ~2 s late
            self._clock.reset()
            self._last_callback_ns = time.monotonic_ns() + round(self._config.startup_grace_s * 1e9)
        stream = None
        try:
            stream = sd.InputStream(
                device=device["index"],
                samplerate=self._rate_hz,
                channels=self._channels,
                dtype="float32",
                blocksize=self._block_samples,
                callback=self._callback,
            )
            stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            if stream is not None:
                stream.close(ignore_errors=True)
            detail = str(exc).replace("\n", " ")
            raise SourceError(
                f"{self.uri}: cannot open {device['name']!r} at {self._rate_hz:g} Hz x {self._channels} ch: {detail}"
            ) from None
        self._stream = stream

    def _callback(self, indata: NDArray[np.float32], frames: int, time_info: Any, status: Any) -> None:
        """PortAudio thread: timestamp the block, average to mono, enqueue (drop oldest)."""
        arrival_ns = time.monotonic_ns()
        if status.input_overflow:
            self._counters.error("input_overflow")
        mono = indata.mean(axis=1, keepdims=True, dtype=np.float32)
        with self._cond:
            self._last_callback_ns = arrival_ns
            start_ns = self._clock.block_start(arrival_ns, frames)
            self._queue.append((start_ns, mono))
            self._queued += frames
            while self._queued > self._max_queued and len(self._queue) > 1:
                _, old = self._queue.popleft()
                self._queued -= len(old)
                self._counters.drop("queue_overflow", len(old))
            self._cond.notify_all()

    def read(self, timeout_s: float) -> Samples | None:
        """Return every queued block as one chunk, waiting at most ``timeout_s`` for the first.

        Returns:
            ``Samples`` with ``t_ns`` (N,) int64 monotonic ns and ``values`` (N, 1)
            float32 mono PCM, or None when nothing arrived in time.
        """
        with self._cond:
            if not self._queue:
                self._cond.wait(max(0.0, timeout_s))
            if not self._queue:
                return None
            blocks = list(self._queue)
            self._queue.clear()
            self._queued = 0
        t_ns = np.concatenate([self._clock.times(start, len(block)) for start, block in blocks])
        values = np.concatenate([block for _, block in blocks])
        self._counters.delivered(STREAM_ID, len(t_ns))
        return Samples(STREAM_ID, Modality.AUDIO, t_ns, values)

    def _healthy(self) -> bool:
        """True while the stream runs and callbacks keep arriving."""
        stream = self._stream
        if stream is None or not stream.active:
            return False
        stall_ns = round(max(self._config.stall_blocks * self._block_s, _MIN_STALL_S) * 1e9)
        with self._cond:
            return time.monotonic_ns() - self._last_callback_ns <= stall_ns

    def _supervise(self) -> None:
        """Supervisor thread: detect a lost device, then reopen it with exponential backoff."""
        delay_s = min(0.1, self._config.backoff_max_s)
        outage = False
        while not self._stop.wait(delay_s if outage else self._block_s * 2):
            if not outage and self._healthy():
                continue
            if not outage:
                outage = True
                delay_s = min(0.1, self._config.backoff_max_s)
                self._counters.error("disconnect")
                _LOG.warning("%s: audio device stopped delivering; reopening with backoff", self.uri)
            self._close_stream()
            if self._stop.is_set():
                break
            try:
                self._reopen()
            except SourceError as exc:
                _LOG.debug("%s: reopen failed: %s", self.uri, exc)
                delay_s = min(2 * delay_s, self._config.backoff_max_s)
                continue
            outage = False
            self._counters.reconnected()
            _LOG.warning("%s: audio device reopened", self.uri)

    def _reopen(self) -> None:
        """Re-initialise PortAudio (refreshes the device list) and open the device again."""
        sd = self._sd
        try:  # sounddevice's documented way to rescan devices; skip terminate if a rescan half-failed
            if getattr(sd, "_initialized", 1) > 0:
                sd._terminate()
            sd._initialize()
        except sd.PortAudioError as exc:
            raise SourceError(f"{self.uri}: PortAudio re-initialisation failed: {exc}") from None
        device = resolve_device(sd, self._config.device)
        if self._stop.is_set():
            return
        self._open(device)

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception as exc:  # a vanished device may fail in any way; keep going
                _LOG.debug("%s: closing the stream failed: %s", self.uri, exc)

    def stats(self) -> SourceStats:
        """Counters: samples delivered, ``queue_overflow`` drops, ``input_overflow``/``disconnect`` errors."""
        return self._counters.snapshot()

    def close(self) -> None:
        """Stop the supervisor and the stream; idempotent."""
        self._stop.set()
        if self._supervisor.is_alive() and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=5.0)
        self._close_stream()

    def __enter__(self) -> MicrophoneSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
