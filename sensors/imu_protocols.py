"""Pure parsers of serial IMU protocols (csv, witmotion, bno08x-rvc): bytes in, SI samples out.

No I/O, threads or clocks; the MAVLink parser lives in :mod:`sensors.imu_mavlink`. Never imports torch.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

G_MS2 = 9.80665  # standard gravity, m/s^2 per g
DEG_TO_RAD = math.pi / 180.0
IMU_CHANNELS = ("ax", "ay", "az", "gx", "gy", "gz")
IMU_UNITS = "m/s^2,rad/s"
RVC_CHANNELS = ("ax", "ay", "az", "yaw", "pitch", "roll")
RVC_UNITS = "m/s^2,rad"
TIME_COLUMNS = {"t_us": 1_000, "t_ms": 1_000_000, "t_s": 1_000_000_000}  # ns per unit
_U32_US = 1 << 32  # Arduino micros() wraps here (about 71.6 min)
_MAX_LINE_BYTES = 512
_WIT_UNUSED = frozenset({0x50, *range(0x53, 0x5B)})  # time, angle, mag, pressure, GPS..., quaternion


@dataclass(frozen=True)
class ParsedChunk:
    """Samples decoded from one ``feed`` call.

    Attributes:
        values: (N, C) float32 in SI units (see the parser's ``channels`` and ``units``).
        device_t_ns: (N,) int64 device timestamps in ns, or None if the protocol has none.
        drops: what was discarded during this call, by reason (bytes for ``garbage_bytes``, else frames).
    """

    values: NDArray[np.float32]
    device_t_ns: NDArray[np.int64] | None
    drops: dict[str, int]

    def __len__(self) -> int:
        return len(self.values)


class ImuParser(Protocol):
    """A stateful stream parser; ``feed`` takes bytes in any split, ``reset`` forgets partial input."""

    channels: tuple[str, ...]
    units: str

    def feed(self, data: bytes) -> ParsedChunk: ...

    def reset(self) -> int: ...


def make_chunk(
    rows: list[tuple[float, ...]], scale: NDArray[np.float64], times: list[int] | None, drops: dict[str, int]
) -> ParsedChunk:
    values = (np.array(rows, dtype=np.float64).reshape(len(rows), len(scale)) * scale).astype(np.float32)
    device = None if times is None else np.array(times, dtype=np.int64)
    return ParsedChunk(values, device, {k: v for k, v in drops.items() if v})


def count_drop(drops: dict[str, int], reason: str, n: int = 1) -> None:
    drops[reason] = drops.get(reason, 0) + n


class FrameScanner:
    """Cuts header-prefixed binary frames out of a byte stream and resynchronises within one frame.

    A candidate starts at each ``header``; ``size_of(buf, i)`` gives its length (None: more bytes
    needed; -1: not a frame start) and ``decode(frame)`` returns a decoded object or a rejection
    reason (str). A rejected candidate is ``"truncated"`` when a valid frame starts inside it (its
    bytes up to that frame are dropped; if they are no more than a header, ``garbage_bytes``),
    else it is counted under its reason and skipped whole. Bytes outside any candidate count as
    ``garbage_bytes``. Buffered bytes never exceed one candidate plus the bytes needed to decide.
    """

    def __init__(
        self,
        headers: tuple[bytes, ...],
        size_of: Callable[[bytearray, int], int | None],
        decode: Callable[[bytes], object],
    ) -> None:
        self._headers = headers
        self._size_of = size_of
        self._decode = decode
        self._buf = bytearray()

    def scan(self, data: bytes, drops: dict[str, int]) -> list[object]:
        """Decoded frames in order; a None item marks that something was discarded there."""
        buf = self._buf
        buf += data
        out: list[object] = []
        i = 0
        while True:
            j = self._find(buf, i, len(buf))
            end = len(buf) - self._partial_header(buf) if j < 0 else j
            if end > i:
                count_drop(drops, "garbage_bytes", end - i)
                out.append(None)
                i = end
            if j < 0:
                break
            size = self._size_of(buf, i)
            if size is not None and size < 0:
                count_drop(drops, "garbage_bytes")
                out.append(None)
                i += 1
                continue
            if size is None or len(buf) - i < size:
                break
            item = self._decode(bytes(buf[i : i + size]))
            if not isinstance(item, str):
                out.append(item)
                i += size
                continue
            resync = self._inner_frame(buf, i, size)
            if resync is None:
                break  # undecided until more bytes arrive
            if resync - i <= len(self._headers[0]):
                count_drop(drops, "garbage_bytes", resync - i)  # a stray header byte, not a frame
            else:
                count_drop(drops, "truncated" if resync < i + size else item)
            out.append(None)
            i = resync
        del buf[:i]
        return out

    def _find(self, buf: bytearray, start: int, end: int) -> int:
        found = [j for j in (buf.find(h, start, end) for h in self._headers) if j >= 0]
        return min(found) if found else -1

    def _partial_header(self, buf: bytearray) -> int:
        """Length of the longest buffer suffix that is a proper prefix of a header (kept for later)."""
        for k in range(len(self._headers[0]) - 1, 0, -1):
            if any(buf.endswith(h[:k]) for h in self._headers):
                return k
        return 0

    def _inner_frame(self, buf: bytearray, i: int, size: int) -> int | None:
        """Start of the first valid frame inside the rejected one, ``i + size`` if none, None if undecided."""
        p = self._find(buf, i + 1, i + size)
        while p >= 0:
            inner = self._size_of(buf, p)
            if inner is None or (inner > 0 and len(buf) - p < inner):
                return None
            if inner > 0 and not isinstance(self._decode(bytes(buf[p : p + inner])), str):
                return p
            p = self._find(buf, p + 1, i + size)
        return i + size

    def reset(self) -> int:
        """Forget buffered bytes; returns how many were dropped."""
        n = len(self._buf)
        self._buf.clear()
        return n


@dataclass(frozen=True)
class CsvConfig:
    """Text lines, one sample per line.

    Attributes:
        columns: column names in line order: ax..gz each once, at most one of t_us/t_ms/t_s, ``_`` skips.
        accel_unit: ``"g"``, ``"m/s2"`` or ``"raw"`` (divided by ``accel_scale`` counts per g).
        gyro_unit: ``"deg/s"``, ``"rad/s"`` or ``"raw"`` (divided by ``gyro_scale`` counts per deg/s).
        accel_scale: raw counts per g, required with ``accel_unit="raw"``.
        gyro_scale: raw counts per deg/s, required with ``gyro_unit="raw"``.
        delimiter: the field separator; ``" "`` splits on any whitespace run.
    """

    columns: tuple[str, ...] = IMU_CHANNELS
    accel_unit: str = "m/s2"
    gyro_unit: str = "rad/s"
    accel_scale: float | None = None
    gyro_scale: float | None = None
    delimiter: str = ","

    def scale(self) -> NDArray[np.float64]:
        """(6,) float64 factors from line units to m/s^2 and rad/s, ax..gz order."""
        accel = {"g": G_MS2, "m/s2": 1.0, "raw": G_MS2 / (self.accel_scale or 1.0)}[self.accel_unit]
        gyro = {"deg/s": DEG_TO_RAD, "rad/s": 1.0, "raw": DEG_TO_RAD / (self.gyro_scale or 1.0)}[self.gyro_unit]
        return np.array([accel] * 3 + [gyro] * 3)


class CsvParser:
    """Text lines ``v0<d>v1<d>...\\n`` (``\\r\\n`` too) per :class:`CsvConfig`.

    A line with the wrong field count, a non-number or a non-finite value, or a line over 512
    bytes, is one ``bad_line``; empty lines are skipped. ``t_us`` is unwrapped at 2**32 us
    (Arduino ``micros()``). Lines carry no checksum: a line cut short only at a field boundary
    is detected; one cut inside its last field cannot be.
    """

    units = IMU_UNITS
    channels = IMU_CHANNELS

    def __init__(self, config: CsvConfig) -> None:
        self._config = config
        self._n_fields = len(config.columns)
        self._index = [config.columns.index(c) for c in IMU_CHANNELS]
        time_cols = [c for c in config.columns if c in TIME_COLUMNS]
        self._t_index = config.columns.index(time_cols[0]) if time_cols else None
        self._t_scale_ns = TIME_COLUMNS[time_cols[0]] if time_cols else 0
        self._wraps = time_cols == ["t_us"]
        self._scale = config.scale()
        self._sep = None if config.delimiter == " " else config.delimiter
        self._buf = b""
        self._last_t = -math.inf
        self._t_offset = 0.0

    def feed(self, data: bytes) -> ParsedChunk:
        """Parse every complete line in the buffered bytes plus ``data``."""
        *lines, self._buf = (self._buf + data).split(b"\n")
        drops: dict[str, int] = {}
        if len(self._buf) > _MAX_LINE_BYTES:
            count_drop(drops, "bad_line")
            self._buf = b""
        rows: list[tuple[float, ...]] = []
        times: list[int] | None = [] if self._t_index is not None else None
        for raw in lines:
            line = raw.strip()
            if not line:
                continue
            fields = self._fields(line)
            if fields is None:
                count_drop(drops, "bad_line")
                continue
            rows.append(tuple(fields[k] for k in self._index))
            if times is not None and self._t_index is not None:
                times.append(self._device_ns(fields[self._t_index]))
        return make_chunk(rows, self._scale, times, drops)

    def _fields(self, line: bytes) -> list[float] | None:
        try:
            parts = line.decode("ascii").split(self._sep)
            if len(parts) != self._n_fields:
                return None
            values = [math.nan if c == "_" else float(p) for p, c in zip(parts, self._config.columns, strict=True)]
        except (UnicodeDecodeError, ValueError):
            return None
        ok = all(math.isfinite(v) for v, c in zip(values, self._config.columns, strict=True) if c != "_")
        return values if ok else None

    def _device_ns(self, t: float) -> int:
        if self._wraps and t + self._t_offset < self._last_t - _U32_US / 2:
            self._t_offset += _U32_US
        self._last_t = t + self._t_offset
        return round(self._last_t * self._t_scale_ns)

    def reset(self) -> int:
        """Forget a partial line; returns its length in bytes."""
        n, self._buf = len(self._buf), b""
        return n


class WitmotionParser:
    """WitMotion WT901-style 11-byte frames ``0x55 type d0..d7 sum`` (sum of the first 10 bytes & 0xFF).

    Pairing rule: a sample is an accel frame (0x51) followed by a gyro frame (0x52) with nothing
    discarded between them (other valid frame types, e.g. angle 0x53, may sit between). An accel
    or gyro frame left without its partner counts as ``unpaired``; valid frames of other known
    types count as ``unused_frame``, unknown types as ``unknown_type``. No device timestamps.
    """

    units = IMU_UNITS
    channels = IMU_CHANNELS

    def __init__(self, accel_range_g: float = 16.0, gyro_range_dps: float = 2000.0) -> None:
        accel, gyro = accel_range_g * G_MS2 / 32768.0, gyro_range_dps * DEG_TO_RAD / 32768.0
        self._scale = np.array([accel] * 3 + [gyro] * 3)
        self._scanner = FrameScanner((b"\x55",), lambda buf, i: 11, _wit_decode)
        self._accel: tuple[int, ...] | None = None

    def feed(self, data: bytes) -> ParsedChunk:
        """Parse ``data`` (any split); returns completed accel+gyro pairs."""
        drops: dict[str, int] = {}
        rows: list[tuple[float, ...]] = []
        for frame in self._scanner.scan(data, drops):
            kind = None if frame is None else frame[1]  # type: ignore[index]
            if kind in _WIT_UNUSED:
                count_drop(drops, "unused_frame")
                continue
            if kind == 0x52 and self._accel is not None:
                rows.append(self._accel + struct.unpack_from("<3h", frame, 2))  # type: ignore[arg-type]
                self._accel = None
                continue
            if self._accel is not None or kind == 0x52:
                count_drop(drops, "unpaired")
            self._accel = struct.unpack_from("<3h", frame, 2) if kind == 0x51 else None  # type: ignore[arg-type]
            if kind not in (None, 0x51, 0x52):
                count_drop(drops, "unknown_type")
        return make_chunk(rows, self._scale, None, drops)

    def reset(self) -> int:
        """Forget buffered bytes and a pending accel frame; returns bytes dropped."""
        self._accel = None
        return self._scanner.reset()


def _wit_decode(frame: bytes) -> bytes | str:
    return frame if sum(frame[:10]) & 0xFF == frame[10] else "bad_checksum"


class Bno08xRvcParser:
    """BNO08x UART-RVC 19-byte frames: ``AA AA index yaw pitch roll ax ay az r r r sum``.

    Angles are int16 LE in 0.01 deg, accel int16 LE in mg; sum = the 16 bytes from index, mod 256.
    RVC mode has no angular rate, and none is invented: values are (N, 6) ax, ay, az (m/s^2),
    yaw, pitch, roll (rad), as the sensor's own fusion reports them (``units = "m/s^2,rad"``).
    """

    units = RVC_UNITS
    channels = RVC_CHANNELS

    def __init__(self) -> None:
        angle = 0.01 * DEG_TO_RAD
        self._scale = np.array([G_MS2 / 1000.0] * 3 + [angle] * 3)
        self._scanner = FrameScanner((b"\xaa\xaa",), lambda buf, i: 19, _rvc_decode)

    def feed(self, data: bytes) -> ParsedChunk:
        """Parse ``data`` (any split); one sample per valid frame."""
        drops: dict[str, int] = {}
        rows = []
        for frame in self._scanner.scan(data, drops):
            if frame is not None:
                yaw, pitch, roll, ax, ay, az = struct.unpack_from("<6h", frame, 3)  # type: ignore[arg-type]
                rows.append((ax, ay, az, yaw, pitch, roll))
        return make_chunk(rows, self._scale, None, drops)

    def reset(self) -> int:
        """Forget buffered bytes; returns how many were dropped."""
        return self._scanner.reset()


def _rvc_decode(frame: bytes) -> bytes | str:
    return frame if sum(frame[2:18]) & 0xFF == frame[18] else "bad_checksum"
