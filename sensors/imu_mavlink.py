"""MAVLink IMU parser (HIGHRES_IMU, SCALED_IMU, RAW_IMU): own framing and resync, pymavlink decoding.

pymavlink is imported only when a parser is built. Never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.sources import SourceError
from sensors.imu_protocols import (
    DEG_TO_RAD,
    G_MS2,
    IMU_CHANNELS,
    IMU_UNITS,
    FrameScanner,
    ParsedChunk,
    count_drop,
    make_chunk,
)


def import_mavlink_dialect() -> Any:
    """pymavlink's MAVLink 2 ``common`` dialect, or one-line SourceError naming the package."""
    try:
        from pymavlink.dialects.v20 import common
    except ImportError:
        raise SourceError("serial protocol=mavlink needs pymavlink (pip install pymavlink)") from None
    return common


def _mav_size(buf: bytearray, i: int) -> int | None:
    """MAVLink frame length at ``i`` (v1 0xFE / v2 0xFD), None if the header is incomplete, -1 if invalid."""
    if len(buf) - i < 3:
        return None
    if buf[i] == 0xFE:
        return 8 + buf[i + 1]
    if buf[i + 2] & ~0x01:
        return -1  # unknown incompatibility flags: not a frame we could check
    return 12 + buf[i + 1] + (13 if buf[i + 2] & 0x01 else 0)


@dataclass(frozen=True)
class MavlinkConfig:
    """Which MAVLink IMU message becomes samples.

    Attributes:
        message: ``"auto"`` (lock onto the first of HIGHRES_IMU / SCALED_IMU, or RAW_IMU when
            both scales are set) or one of ``"HIGHRES_IMU"``, ``"SCALED_IMU"``, ``"RAW_IMU"``.
        imu_id: the ``id`` field (IMU instance) of HIGHRES_IMU / RAW_IMU to keep.
        accel_scale: RAW_IMU raw counts per g.
        gyro_scale: RAW_IMU raw counts per deg/s.
    """

    message: str = "auto"
    imu_id: int = 0
    accel_scale: float | None = None
    gyro_scale: float | None = None


class MavlinkParser:
    """MAVLink v1/v2 frames cut by :class:`FrameScanner`, CRC-checked and decoded by pymavlink.

    HIGHRES_IMU (105: float32 m/s^2, rad/s, ``time_usec``), SCALED_IMU (26: mg, mrad/s,
    ``time_boot_ms``) and RAW_IMU (27: counts / ``accel_scale`` g, counts / ``gyro_scale`` deg/s,
    ``time_usec``) in the autopilot's body frame (FRD), device time = the message's time field.
    Other valid messages, other IMU instances and IMU messages not selected count as
    ``other_message``; a message id the dialect lacks as ``unknown_type`` (its CRC can't be checked).
    """

    units = IMU_UNITS
    channels = IMU_CHANNELS

    def __init__(self, config: MavlinkConfig) -> None:
        self._config = config
        self._mav = import_mavlink_dialect().MAVLink(None)
        self._mav.robust_parsing = True
        self._message = None if config.message == "auto" else config.message
        raw = config.accel_scale and config.gyro_scale
        self._eligible = {"HIGHRES_IMU", "SCALED_IMU", *(("RAW_IMU",) if raw else ())}
        self._scanner = FrameScanner((b"\xfd", b"\xfe"), _mav_size, self._decode)
        self._scale = np.ones(6)

    def _decode(self, frame: bytes) -> object:
        mav = self._mav
        msgs = mav.parse_buffer(frame) or []
        mav.buf, mav.buf_index = bytearray(), 0  # our framing decides; never let pymavlink carry bytes over
        if len(msgs) != 1:
            return "bad_checksum"
        kind = msgs[0].get_type()
        if kind == "BAD_DATA":
            return "bad_checksum"
        return "unknown_type" if kind.startswith("UNKNOWN_") else msgs[0]

    def feed(self, data: bytes) -> ParsedChunk:
        """Parse ``data`` (any split); one sample per selected IMU message."""
        drops: dict[str, int] = {}
        rows: list[tuple[float, ...]] = []
        times: list[int] = []
        for msg in self._scanner.scan(data, drops):
            if msg is None:
                continue
            row = self._row(msg)
            if row is None:
                count_drop(drops, "other_message")
                continue
            rows.append(row[0])
            times.append(row[1])
        return make_chunk(rows, self._scale, times, drops)

    def _row(self, msg: Any) -> tuple[tuple[float, ...], int] | None:
        """((6,) SI values, device ns) of a selected IMU message, None for anything else."""
        kind = msg.get_type()
        if self._message is None and kind in self._eligible:
            self._message = kind
        if kind != self._message or getattr(msg, "id", 0) != self._config.imu_id:
            return None
        accel, gyro = (msg.xacc, msg.yacc, msg.zacc), (msg.xgyro, msg.ygyro, msg.zgyro)
        if kind == "HIGHRES_IMU":
            return accel + gyro, msg.time_usec * 1000
        if kind == "SCALED_IMU":
            a, g = G_MS2 / 1000.0, 1e-3
            return tuple(v * a for v in accel) + tuple(v * g for v in gyro), msg.time_boot_ms * 1_000_000
        a = G_MS2 / (self._config.accel_scale or 1.0)
        g = DEG_TO_RAD / (self._config.gyro_scale or 1.0)
        return tuple(v * a for v in accel) + tuple(v * g for v in gyro), msg.time_usec * 1000

    def reset(self) -> int:
        """Forget buffered bytes; returns how many were dropped."""
        return self._scanner.reset()
