"""How a stream is cut into windows: length, hop, model rate and gap tolerance, from the manifest."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.errors import ConfigError
from runtime.manifest import ModalitySpec
from runtime.types import Modality

NS_PER_S = 1_000_000_000
OVERRIDE_KEYS = ("length_s", "hop_s", "length_samples", "hop_samples", "max_gap_s", "frame_stride")


@dataclass(frozen=True)
class WindowConfig:
    """How one stream is cut into encoder inputs.

    Attributes:
        length_samples: samples per window at the model rate (audio 32000, IMU 2000); 1 for frames.
        hop_samples: samples between window starts at the model rate (audio 16000 = 1 s); 1 for frames.
        sample_rate_hz: model rate (audio 16000, IMU 400); None for frame streams.
        max_gap_s: a hole between consecutive samples longer than this (and than 3 sample
            periods) restarts windowing; for audio also the largest tolerated drift of
            the timestamps from the sample clock.
        frame_stride: frame streams: use every Nth frame.
        resample_lowpass_filter_width: audio resampler zero crossings per side (official 6).
        resample_rolloff: audio resampler cut-off, fraction of the lower Nyquist rate (official 0.99).
    """

    length_samples: int
    hop_samples: int
    sample_rate_hz: float | None
    max_gap_s: float = 0.25
    frame_stride: int = 1
    resample_lowpass_filter_width: int = 6
    resample_rolloff: float = 0.99

    def __post_init__(self) -> None:
        if min(self.length_samples, self.hop_samples, self.frame_stride, self.resample_lowpass_filter_width) < 1:
            raise ConfigError(f"WindowConfig: length, hop, frame_stride must be >= 1, got {self}")
        if self.sample_rate_hz is not None and not (math.isfinite(self.sample_rate_hz) and self.sample_rate_hz > 0):
            raise ConfigError(f"WindowConfig: sample_rate_hz must be positive or None, got {self.sample_rate_hz}")
        if not (math.isfinite(self.max_gap_s) and self.max_gap_s > 0) or not 0 < self.resample_rolloff <= 1:
            raise ConfigError("WindowConfig: max_gap_s must be positive and resample_rolloff in (0, 1]")
        if self.sample_rate_hz is None and (self.length_samples, self.hop_samples) != (1, 1):
            raise ConfigError("WindowConfig: frame windows (sample_rate_hz None) have length 1 and hop 1")

    @classmethod
    def from_spec(cls, spec: ModalitySpec, overrides: Mapping[str, Any] | None = None) -> WindowConfig:
        """The manifest's window for ``spec`` with optional overrides (strict keys, one-line errors).

        Args:
            spec: the modality's manifest entry (``spec.window``, ``spec.preprocess``).
            overrides: any of ``length_s``/``hop_s`` (seconds) or ``length_samples``/``hop_samples``
                (model-rate samples), ``max_gap_s``, ``frame_stride`` (frame streams only).

        Raises:
            ConfigError: unknown key, wrong type, non-positive value, or a key that does
                not apply (sizes of a frame window, an IMU length other than the encoder's).
        """
        where = f"{spec.modality.value} window"
        over = dict(overrides or {})
        unknown = sorted(set(over) - set(OVERRIDE_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (valid keys: {', '.join(OVERRIDE_KEYS)})")
        length, hop, rate = _manifest_window(spec, where)
        if rate is None:
            sized = [k for k in over if k not in ("max_gap_s", "frame_stride")]
            if sized:
                raise ConfigError(f"{where}: {sized[0]!r} does not apply, a window is one frame (use frame_stride)")
        elif "frame_stride" in over:
            raise ConfigError(f"{where}: 'frame_stride' applies to frame streams only")
        else:
            new_length = _size(over, "length", length, rate, where)
            hop = _size(over, "hop", hop, rate, where)
            if spec.modality is Modality.IMU and new_length != length:
                raise ConfigError(f"{where}: the encoder takes {length} samples; override hop_s, not the length")
            length = new_length
        extra: dict[str, Any] = {}
        if spec.modality is Modality.AUDIO:
            extra["resample_lowpass_filter_width"] = int(spec.preprocess.get("resample_lowpass_filter_width", 6))
            extra["resample_rolloff"] = float(spec.preprocess.get("resample_rolloff", 0.99))
        return cls(
            length_samples=length,
            hop_samples=hop,
            sample_rate_hz=rate,
            max_gap_s=_positive(over.get("max_gap_s", cls.max_gap_s), f"{where}.max_gap_s", float),
            frame_stride=_positive(over.get("frame_stride", 1), f"{where}.frame_stride", int),
            **extra,
        )


def _manifest_window(spec: ModalitySpec, where: str) -> tuple[int, int, float | None]:
    """(length, hop, model rate or None) from ``spec.window``."""
    win = spec.window
    if not win:
        raise ConfigError(f"{where}: the bundle gives {spec.modality.value} no streaming window")
    try:
        rate = win.get("sample_rate_hz")
        if rate is None:
            return 1, 1, None
        return int(win["length_samples"]), int(win["hop_samples"]), float(rate)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: malformed manifest window {win!r} ({exc})") from None


def _size(over: dict[str, Any], name: str, default: int, rate: float, where: str) -> int:
    """Model-rate samples from ``{name}_s`` or ``{name}_samples`` (or ``default``)."""
    if f"{name}_s" in over and f"{name}_samples" in over:
        raise ConfigError(f"{where}: give {name}_s or {name}_samples, not both")
    if f"{name}_samples" in over:
        return _positive(over[f"{name}_samples"], f"{where}.{name}_samples", int)
    if f"{name}_s" in over:
        seconds = _positive(over[f"{name}_s"], f"{where}.{name}_s", float)
        samples = round(seconds * rate)
        if samples < 1:
            raise ConfigError(f"{where}.{name}_s: {seconds} s is less than one sample at {rate:g} Hz")
        return samples
    return default


def _positive(value: Any, label: str, kind: type) -> Any:
    """``value`` as a positive ``kind`` (int or float) or a one-line ConfigError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or not math.isfinite(value) or value <= 0:
        what = "a positive integer" if kind is int else "a positive number"
        raise ConfigError(f"{label}: expected {what}, got {value!r}")
    return kind(value)
