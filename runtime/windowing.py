"""Sliding windows over timestamped streams, resampled to the encoder's rate (design §1).

A :class:`Windower` turns the :class:`~runtime.types.Samples` chunks of one stream into
fixed-shape :class:`~runtime.types.Window` s at the model rate:

* **Audio** (native 8-48 kHz, ``(N,)``/``(N, C)``): channels averaged to mono, then
  resampled to 16 kHz with the official windowed sinc (:func:`runtime.preprocess.resample.resample`).
  Each window is resampled from the native samples covering it plus the kernel's
  reach, on a segment that starts on the resampler's phase grid, so a window equals
  the matching slice of resampling the whole contiguous signal (float32 rounding,
  ~1e-7 on full-scale audio). Times come from the sample index (the first sample of
  the segment is the origin), so the hop never drifts.
* **Other sample streams** (IMU at 100-1000 Hz, ``(N, C)``): linear interpolation on
  the host timestamps onto the grid ``t0 + m / rate``; jittery timestamps are fine.
* **Frame streams** (depth, thermal, vision; ``sample_rate_hz is None``): every frame
  (or every ``frame_stride``-th) is one window.

Gaps: when consecutive samples are more than ``max(max_gap_s, 3 sample periods)``
apart, time goes backwards, a non-finite sample arrives (dropped), or audio timestamps
drift more than ``max_gap_s`` from the sample clock, the partial window is discarded
(counted) and windowing restarts at the next sample, so no window ever spans a gap.
State is bounded: one window of native samples plus the resampler's margin.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import ConfigError, InputError
from runtime.preprocess.resample import resample
from runtime.types import Modality, Samples, StreamInfo, Window
from runtime.window_config import NS_PER_S, WindowConfig

__all__ = ["COUNTERS", "WindowConfig", "Windower"]

COUNTERS = (
    "windows",  # windows emitted
    "gaps",  # restarts for any reason below
    "time_backwards",  # restarts because a timestamp went backwards
    "clock_resyncs",  # audio restarts because timestamps drifted from the sample clock
    "nan_samples_dropped",  # samples with NaN/inf values (each run also restarts windowing)
    "partial_windows_discarded",  # partial windows thrown away at a restart
    "samples_discarded_at_gap",  # native samples of those partial windows
    "duplicate_timestamps_dropped",  # interpolated streams: samples repeating the previous time
    "frames_skipped",  # frame streams: frames left out by frame_stride
)


class _NativeBuffer:
    """Growable FIFO of native samples: times (n,) int64, values (n, C) float64, absolute indices."""

    def __init__(self, channels: int) -> None:
        self.t = np.zeros(0, np.int64)
        self.x = np.zeros((0, channels), np.float64)
        self.lo = 0  # first live row
        self.hi = 0  # one past the last live row
        self.base = 0  # absolute (segment) index of row ``lo``

    @property
    def end(self) -> int:
        """Absolute index one past the newest sample (= native samples in the segment)."""
        return self.base + self.hi - self.lo

    def append(self, t: NDArray[np.int64], x: NDArray[np.float64]) -> None:
        n, live = len(t), self.hi - self.lo
        if self.hi + n > len(self.t):
            cap = max(2 * (live + n), 1024)
            t_new, x_new = np.zeros(cap, np.int64), np.zeros((cap, self.x.shape[1]), np.float64)
            t_new[:live], x_new[:live] = self.t[self.lo : self.hi], self.x[self.lo : self.hi]
            self.t, self.x, self.lo, self.hi = t_new, x_new, 0, live
        self.t[self.hi : self.hi + n], self.x[self.hi : self.hi + n] = t, x
        self.hi += n

    def view(self, start: int = 0, stop: int | None = None) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Times and values of absolute indices ``[start, stop)`` (clamped to what is held)."""
        a = self.lo + max(start - self.base, 0)
        b = self.hi if stop is None else self.lo + max(stop - self.base, 0)
        return self.t[a:b], self.x[a:b]

    def drop_before(self, index: int) -> None:
        """Forget samples with absolute index < ``index``."""
        k = min(max(index - self.base, 0), self.hi - self.lo)
        self.lo, self.base = self.lo + k, self.base + k

    def clear(self) -> None:
        self.lo = self.hi = self.base = 0


class Windower:
    """Cuts one stream into model-rate windows (see the module docstring).

    Attributes:
        info: the stream's description (``rate_hz`` is the native rate).
        config: the window settings.
        stream_id: stamped on every window.
        counters: event counts, keys :data:`COUNTERS`.
    """

    def __init__(self, info: StreamInfo, config: WindowConfig, stream_id: str | None = None) -> None:
        self.info, self.config = info, config
        self.stream_id = stream_id or info.stream_id
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._seq = 0
        self._last_t: int | None = None
        self._frames_seen = 0
        native = info.rate_hz
        self._gap_ns = config.max_gap_s * NS_PER_S
        if native is not None and native > 0:
            self._gap_ns = max(self._gap_ns, 3 * NS_PER_S / native)
        self._sinc = config.sample_rate_hz is not None and info.modality is Modality.AUDIO
        if self._sinc:
            self._init_sinc(native)
        if config.sample_rate_hz is not None:
            self._period = Fraction(NS_PER_S) / Fraction(config.sample_rate_hz)
            self._buf = _NativeBuffer(1 if self._sinc else self._channels())
        self._t0 = 0  # segment origin, ns
        self._k = 0  # next window of the segment

    def _channels(self) -> int:
        return int(np.prod(self.info.sample_shape)) if self.info.sample_shape else 1

    def _init_sinc(self, native: float | None) -> None:
        if native is None or not float(native).is_integer() or native <= 0:
            raise ConfigError(f"{self.stream_id}: audio needs a whole-Hz native rate to resample, got {native}")
        model = self.config.sample_rate_hz
        if model is None or not float(model).is_integer():
            raise ConfigError(f"{self.stream_id}: audio model rate must be whole Hz, got {model}")
        self._native_hz, self._model_hz = int(native), int(model)
        g = math.gcd(self._native_hz, self._model_hz)
        self._orig, self._new = self._native_hz // g, self._model_hz // g
        base = min(self._orig, self._new) * self.config.resample_rolloff
        width = math.ceil(self.config.resample_lowpass_filter_width * self._orig / base)  # as resample() does
        self._lead_blocks = -(-width // self._orig)  # input blocks before a window's first block
        self._tail = width + self._orig  # native samples needed past a window's last block
        self._native_period_ns = NS_PER_S / self._native_hz

    def push(self, samples: Samples) -> list[Window]:
        """Add one chunk; return the windows it completes, oldest first.

        Args:
            samples: the next chunk of this stream: audio (N,) or (N, C) PCM; other sample
                streams (N, C) (IMU (N, 6)); frames (N, H, W) or (N, H, W, 3).

        Returns:
            Windows in sensor units at the model rate: audio data (length,) float32, other
            sample streams (length, C) float32, frames one frame each (a copy).

        Raises:
            InputError: the chunk's modality or sample shape does not match the stream.
        """
        if samples.modality is not self.info.modality:
            raise InputError(
                f"{self.stream_id}: got {samples.modality.value} samples for a {self.info.modality.value} stream"
            )
        if len(samples) == 0:
            return []
        if self.config.sample_rate_hz is None:
            return self._push_frames(samples)
        x = self._rows(samples.values)
        finite = np.isfinite(x).all(axis=1)
        edges = [0, *(np.flatnonzero(np.diff(finite.astype(np.int8))) + 1).tolist(), len(finite)]
        out: list[Window] = []
        for lo, hi in itertools.pairwise(edges):
            if finite[lo]:
                out.extend(self._push_run(samples.t_ns[lo:hi], x[lo:hi]))
            else:
                self.counters["nan_samples_dropped"] += hi - lo
                self._restart()
                self._last_t = int(samples.t_ns[hi - 1])
        return out

    def reset(self) -> None:
        """Discard the partial window (counted as a gap); the next sample starts afresh."""
        self._restart()

    def _rows(self, values: NDArray[Any]) -> NDArray[np.float64]:
        """(N, C) float64: audio averaged to mono (N, 1)."""
        x = np.asarray(values, dtype=np.float64)
        x = x.reshape(len(x), -1)
        if self._sinc:
            return x.mean(axis=1, keepdims=True)
        if x.shape[1] != self._buf.x.shape[1]:
            raise InputError(f"{self.stream_id}: samples of {x.shape[1]} values, the stream has {self._buf.x.shape[1]}")
        return x

    def _push_run(self, t: NDArray[np.int64], x: NDArray[np.float64]) -> list[Window]:
        """Finite samples: split at gaps, feed each piece, emit what completes."""
        out: list[Window] = []
        while len(t):
            cut, reason = self._first_break(t)
            if cut == 0:
                if reason:
                    self.counters[reason] += 1
                self._restart()
                self._last_t = None
                continue
            piece_t, piece_x = t[:cut], x[:cut]
            if not self._sinc:
                keep = np.diff(piece_t, prepend=-1 if self._last_t is None else self._last_t) > 0
                self.counters["duplicate_timestamps_dropped"] += int((~keep).sum())
                piece_t, piece_x = piece_t[keep], piece_x[keep]
            if len(piece_t):
                if self._buf.end == 0:
                    self._t0, self._k = int(piece_t[0]), 0
                self._buf.append(piece_t, piece_x)
                self._last_t = int(t[cut - 1])
                out.extend(self._drain())
            t, x = t[cut:], x[cut:]
        return out

    def _first_break(self, t: NDArray[np.int64]) -> tuple[int, str]:
        """(index of the first sample that must start a new segment or len(t), counter to bump at index 0)."""
        prev = t[0] if self._last_t is None else self._last_t
        d = np.diff(t, prepend=prev)
        bad = (d > self._gap_ns) | (d < 0)
        reason = "time_backwards" if d[0] < 0 else ""
        if self._sinc and self._buf.end:
            n = self._buf.end + np.arange(len(t))
            drift = np.abs((t - self._t0) - n * self._native_period_ns) > self.config.max_gap_s * NS_PER_S
            if drift[0] and not bad[0]:
                reason = "clock_resyncs"
            bad |= drift
        hits = np.flatnonzero(bad)
        return (int(hits[0]) if len(hits) else len(t)), reason

    def _restart(self) -> None:
        """End the segment: count the partial window (if any) and forget the buffer."""
        if self.config.sample_rate_hz is None or self._buf.end == 0:
            return
        self.counters["gaps"] += 1
        pending = self._buf.end - self._native_index(self._k * self.config.hop_samples)
        if pending > 0:
            self.counters["partial_windows_discarded"] += 1
            self.counters["samples_discarded_at_gap"] += pending
        self._buf.clear()

    def _native_index(self, m: int) -> int:
        """Absolute native index of the first sample at or after model sample ``m``."""
        if self._sinc:
            return -(-m * self._orig // self._new)
        t, _ = self._buf.view()
        return self._buf.base + int(np.searchsorted(t - self._t0, float(m * self._period)))

    def _drain(self) -> list[Window]:
        out = []
        while (data := self._window_data(self._k * self.config.hop_samples)) is not None:
            m = self._k * self.config.hop_samples
            start = self._t0 + round(m * self._period)
            end = start + round(self.config.length_samples * self._period)
            out.append(Window(self.stream_id, self.info.modality, self._seq, start, end, data))
            self._seq, self._k = self._seq + 1, self._k + 1
            self.counters["windows"] += 1
        self._buf.drop_before(self._keep_from(self._k * self.config.hop_samples))
        return out

    def _keep_from(self, m: int) -> int:
        """First absolute native index the window starting at model sample ``m`` needs."""
        if self._sinc:
            if self._orig == self._new:
                return m
            return max(0, (m // self._new - self._lead_blocks) * self._orig)
        t, _ = self._buf.view()
        j = int(np.searchsorted(t - self._t0, float(m * self._period), side="right")) - 1
        return self._buf.base + max(j, 0)

    def _window_data(self, m: int) -> NDArray[np.float32] | None:
        """The window starting at model sample ``m``, or None until its samples have arrived."""
        n = self.config.length_samples
        if self._sinc:
            return self._sinc_window(m, n)
        t, x = self._buf.view()
        if not len(t) or int(t[-1]) - self._t0 < (m + n - 1) * self._period:
            return None
        grid = (m + np.arange(n, dtype=np.float64)) * float(self._period)
        rel = (t - self._t0).astype(np.float64)
        return np.stack([np.interp(grid, rel, x[:, c]) for c in range(x.shape[1])], axis=1).astype(np.float32)

    def _sinc_window(self, m: int, n: int) -> NDArray[np.float32] | None:
        """Audio: resample the native span of model samples ``[m, m + n)`` on the whole-signal phase grid."""
        if self._orig == self._new:
            if self._buf.end < m + n:
                return None
            return self._buf.view(m, m + n)[1][:, 0].astype(np.float32)
        first_block, last_block = m // self._new, (m + n - 1) // self._new
        start = max(0, (first_block - self._lead_blocks) * self._orig)
        stop = (last_block + 1) * self._orig + self._tail
        if self._buf.end < stop:
            return None
        segment = self._buf.view(start, stop)[1][:, 0]
        cfg = self.config
        out = resample(
            segment, self._native_hz, self._model_hz, cfg.resample_lowpass_filter_width, cfg.resample_rolloff
        )
        offset = m - (start // self._orig) * self._new
        return np.ascontiguousarray(out[offset : offset + n])

    def _push_frames(self, samples: Samples) -> list[Window]:
        """Frame streams: one window per kept frame, start = frame time, end = start + 1 / rate."""
        rate = self.info.rate_hz
        dur = round(NS_PER_S / rate) if rate else 0
        out = []
        for t, frame in zip(samples.t_ns.tolist(), samples.values, strict=True):
            if self._last_t is not None and t < self._last_t:
                self.counters["time_backwards"] += 1
                continue
            if self._last_t is not None and t - self._last_t > self._gap_ns:
                self.counters["gaps"] += 1
                self._frames_seen = 0  # the first frame after a gap is always used
            self._last_t = t
            self._frames_seen += 1
            if (self._frames_seen - 1) % self.config.frame_stride:
                self.counters["frames_skipped"] += 1
                continue
            out.append(Window(self.stream_id, self.info.modality, self._seq, t, t + dur, np.array(frame)))
            self._seq += 1
            self.counters["windows"] += 1
        return out
