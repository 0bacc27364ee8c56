"""Sample sources opened from URIs (design §6), resolved lazily by scheme.

``open_source("serial:///dev/ttyUSB0?baud=921600&protocol=witmotion")`` looks the
scheme up in a table of ``"module:Class"`` strings and imports the sensor module
only then, so a missing device library gives one line naming the extra to install.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

from runtime.errors import ConfigError, EdgebindError
from runtime.types import Samples, StreamInfo

# scheme: ("module:Class", pip extra that provides its device library)
SOURCE_TABLE: dict[str, tuple[str, str]] = {
    "serial": ("sensors.imu_serial:ImuSerialSource", "sensors"),
    "mic": ("sensors.microphone:MicrophoneSource", "sensors"),
    "realsense": ("sensors.realsense:RealSenseSource", "realsense"),
    "uvc": ("sensors.uvc:UvcSource", "cameras"),
    "replay": ("sensors.replay:ReplaySource", "sensors"),
    "sim": ("sensors.sim:SimSource", "sensors"),
}


class SourceError(EdgebindError):
    """A source cannot be opened or has failed (one line naming the device and what to do)."""


@dataclass(frozen=True)
class SourceUri:
    """A parsed source URI: ``scheme://[host]path?key=value&...``.

    Attributes:
        text: the URI as given.
        scheme: e.g. ``"serial"``.
        target: host plus path as written (not percent-decoded), e.g. ``"/dev/ttyUSB0"``,
            ``"default"``, ``"walk"`` or ``"frames/f_%04d.png"``.
        params: query parameters as strings (repeated keys: the last wins).
    """

    text: str
    scheme: str
    target: str
    params: dict[str, str]

    def check_params(self, allowed: Mapping[str, str]) -> None:
        """Raise ConfigError naming the first unknown parameter and listing ``allowed`` (name: help)."""
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            valid = ", ".join(f"{k} ({v})" for k, v in allowed.items()) or "none"
            raise ConfigError(f"{self.text}: unknown parameter {unknown[0]!r}; valid: {valid}")

    def get(self, key: str, default: Any, kind: type = str) -> Any:
        """Parameter ``key`` converted with ``kind`` (int, float, bool, str) or ``default``."""
        if key not in self.params:
            return default
        raw = self.params[key]
        try:
            if kind is bool:
                if raw.lower() not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                    raise ValueError(raw)
                return raw.lower() in {"1", "true", "yes", "on"}
            return kind(raw)
        except ValueError:
            raise ConfigError(f"{self.text}: parameter {key}={raw!r} is not a valid {kind.__name__}") from None


def parse_uri(text: str) -> SourceUri:
    """Parse a source URI; unknown schemes raise ConfigError listing the valid ones."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SOURCE_TABLE:
        valid = ", ".join(f"{s}://" for s in SOURCE_TABLE)
        raise ConfigError(f"{text!r}: unknown source scheme {scheme or '(none)'!r}; valid: {valid}")
    # Not percent-decoded: device paths and frame patterns such as ``f_%04d.png`` pass verbatim.
    target = parts.netloc + parts.path
    return SourceUri(text, scheme, target, dict(parse_qsl(parts.query, keep_blank_values=True)))


@dataclass(frozen=True)
class SourceStats:
    """A snapshot of a source's counters.

    Attributes:
        samples: samples delivered per stream id.
        dropped: samples/bytes/frames discarded, by reason (e.g. ``"bad_checksum"``).
        errors: error events by reason (e.g. ``"disconnect"``).
        reconnects: successful reopenings after a failure.
    """

    samples: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0


class Counters:
    """Thread-safe counters a source updates; :meth:`snapshot` gives :class:`SourceStats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._reconnects = 0

    def delivered(self, stream_id: str, n: int) -> None:
        with self._lock:
            self._samples[stream_id] = self._samples.get(stream_id, 0) + n

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + n

    def error(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._errors[reason] = self._errors.get(reason, 0) + n

    def reconnected(self) -> None:
        with self._lock:
            self._reconnects += 1

    def snapshot(self) -> SourceStats:
        with self._lock:
            return SourceStats(dict(self._samples), dict(self._dropped), dict(self._errors), self._reconnects)


@runtime_checkable
class SampleSource(Protocol):
    """A live or recorded sensor. ``read`` never blocks longer than ``timeout_s``.

    ``read`` returns the next chunk of any of the source's streams, or None when
    nothing arrived in time. A finished finite source (a replay at its end) raises
    :class:`EOFError`. Failures a source can recover from (a device that went away)
    are counted and reported in :meth:`stats`, not raised.
    """

    uri: str
    streams: tuple[StreamInfo, ...]

    def read(self, timeout_s: float) -> Samples | None: ...

    def stats(self) -> SourceStats: ...

    def close(self) -> None: ...

    def __enter__(self) -> SampleSource: ...

    def __exit__(self, *exc: object) -> None: ...


def open_source(uri: str) -> SampleSource:
    """Open the source named by ``uri``; its class must have ``from_uri(SourceUri)``.

    Raises:
        ConfigError: unknown scheme or parameter (one line listing the valid ones).
        SourceError: the device library is missing or the device cannot be opened.
    """
    parsed = parse_uri(uri)
    target, extra = SOURCE_TABLE[parsed.scheme]
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SourceError(f"{uri}: {exc} (install it with `pip install 'edgebind[{extra}]'`)") from None
    source: SampleSource = getattr(module, cls_name).from_uri(parsed)
    return source
