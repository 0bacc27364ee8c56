"""Core runtime types shared by every stage (stdlib + numpy only, never torch)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


class Modality(str, enum.Enum):
    """The six ImageBind modalities; values are the official dictionary keys."""

    VISION = "vision"
    TEXT = "text"
    AUDIO = "audio"
    DEPTH = "depth"
    THERMAL = "thermal"
    IMU = "imu"

    @classmethod
    def parse(cls, name: str) -> Modality:
        """Return the modality named ``name`` or raise ``ValueError`` listing the valid names."""
        try:
            return cls(name.strip().lower())
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown modality {name!r}: expected one of {valid}") from None


@dataclass(frozen=True)
class EmbeddingBatch:
    """Embeddings of one modality, one row per input, in input order.

    Attributes:
        modality: which encoder produced the rows.
        vectors: (B, D) float32, exactly the official forward's output (the
            per-modality postprocessing scale included; multi-clip inputs are
            the mean of the scaled clip vectors, as the official code does).
    """

    modality: Modality
    vectors: NDArray[np.float32]

    def unit(self) -> NDArray[np.float32]:
        """Return the rows L2-normalised: (B, D) float32 unit vectors."""
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        return (self.vectors / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class StreamInfo:
    """What one stream of a source delivers (constant for the source's lifetime).

    Attributes:
        stream_id: unique per source, e.g. ``"imu"`` or ``"depth"``; recordings key on it.
        modality: the encoder the stream feeds.
        units: physical units of ``values``, e.g. ``"m/s^2,rad/s"``, ``"pcm"``, ``"m"``, ``"K"``.
        rate_hz: nominal sample (or frame) rate; None if unknown.
        channels: channel names of the last value axis (IMU ``ax..gz``), empty for images.
        sample_shape: shape of one sample, e.g. (6,) IMU, (1,) mono audio, (H, W) depth.
        dtype: numpy dtype name of ``values``.
        extra: source-specific facts (device name, depth scale, ``radiometric`` flag, ...).
    """

    stream_id: str
    modality: Modality
    units: str
    rate_hz: float | None
    channels: tuple[str, ...]
    sample_shape: tuple[int, ...]
    dtype: str
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Samples:
    """A timestamped chunk of one stream, in physical units.

    Attributes:
        stream_id: the :class:`StreamInfo` it belongs to.
        modality: the stream's modality (repeated for convenience).
        t_ns: (N,) int64 host ``time.monotonic_ns()`` of each sample, non-decreasing.
        values: (N, *sample_shape): IMU (N, 6) float m/s^2 then rad/s; audio (N, C)
            float32 PCM in [-1, 1]; depth (N, H, W) float32 metres; thermal (N, H, W)
            float32 kelvin; vision (N, H, W, 3) uint8 RGB; text (N,) str.
        device_t_ns: (N,) int64 device timestamps where the device has them.
    """

    stream_id: str
    modality: Modality
    t_ns: NDArray[np.int64]
    values: NDArray[np.generic]
    device_t_ns: NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        if self.t_ns.dtype != np.int64 or self.t_ns.ndim != 1:
            raise ValueError(f"{self.stream_id}: t_ns must be (N,) int64, got {self.t_ns.dtype} {self.t_ns.shape}")
        if len(self.values) != len(self.t_ns):
            raise ValueError(f"{self.stream_id}: {len(self.values)} values but {len(self.t_ns)} timestamps")
        if len(self.t_ns) > 1 and np.any(np.diff(self.t_ns) < 0):
            raise ValueError(f"{self.stream_id}: t_ns must be non-decreasing")
        if self.device_t_ns is not None and self.device_t_ns.shape != self.t_ns.shape:
            raise ValueError(f"{self.stream_id}: device_t_ns shape {self.device_t_ns.shape} != t_ns shape")

    def __len__(self) -> int:
        return len(self.t_ns)


@dataclass(frozen=True)
class Window:
    """One encoder input's worth of a stream, in sensor units, fixed shape per modality.

    Attributes:
        stream_id: the stream it was cut from (unique across the running sources).
        modality: which encoder takes it.
        seq: 0, 1, 2, ... per stream.
        start_ns: monotonic time of the first sample.
        end_ns: monotonic time just after the last sample (start + length / rate).
        data: audio (length_samples,) float32 PCM at the model rate (16 kHz);
            IMU (length_samples, 6) float32 m/s^2 then rad/s at the model rate
            (400 Hz); depth (H, W) float32 metres; thermal (H, W) float32 kelvin;
            vision (H, W, 3) uint8 RGB.
    """

    stream_id: str
    modality: Modality
    seq: int
    start_ns: int
    end_ns: int
    data: NDArray[np.generic]


@dataclass(frozen=True)
class Match:
    """A detected event: a window (or run of windows) matching a prompt.

    Attributes:
        label: the prompt's label.
        score: cosine similarity (or softmax probability, per the matcher config).
        margin: score minus the best competing prompt's score (background included).
        modality: the modality that matched.
        source_id: the stream it came from.
        start_ns: start of the first matching window (monotonic ns).
        end_ns: end of the last matching window (monotonic ns).
    """

    label: str
    score: float
    margin: float
    modality: Modality
    source_id: str
    start_ns: int
    end_ns: int
