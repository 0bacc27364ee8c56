"""IMU over a serial port, ``serial:///dev/ttyUSB0?baud=&protocol=csv|witmotion|bno08x-rvc|mavlink``.

A reader thread feeds pyserial reads (imported lazily) into a pure parser from
:mod:`sensors.imu_protocols`; values are SI with smoothed host timestamps. Never imports torch.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import ConfigError
from runtime.sources import Counters, SourceError, SourceStats, SourceUri
from runtime.types import Modality, Samples, StreamInfo
from sensors.arrival_clock import ArrivalClock
from sensors.imu_mavlink import MavlinkConfig, MavlinkParser
from sensors.imu_protocols import (
    IMU_CHANNELS,
    TIME_COLUMNS,
    Bno08xRvcParser,
    CsvConfig,
    CsvParser,
    ImuParser,
    WitmotionParser,
)

_LOG = logging.getLogger(__name__)
STREAM_ID = "imu"
_READ_TIMEOUT_S = 0.05  # longest a blocking read waits, so close() is prompt
_BACKOFF_START_S = 0.05
COMMON_PARAMS = {
    "protocol": "csv | witmotion | bno08x-rvc | mavlink (required)",
    "baud": "line speed in baud; default 115200",
    "rate_hz": "nominal sample rate; default estimated from arrivals during probe_s",
    "probe_s": "seconds opening waits for data to estimate the rate when rate_hz is absent; default 1",
    "queue_s": "seconds of samples kept when nobody reads, oldest dropped first; default 2",
    "exclusive": "lock the port against other processes; default true",
}
PROTOCOL_PARAMS: dict[str, dict[str, str]] = {
    "csv": {
        "columns": "names in line order: ax,ay,az,gx,gy,gz once each, optional t_us|t_ms|t_s, _ skips",
        "accel_unit": "g | m/s2 | raw; default m/s2",
        "gyro_unit": "deg/s | rad/s | raw; default rad/s",
        "accel_scale": "raw counts per g (accel_unit=raw), e.g. 16384 for MPU-6050 at 2 g",
        "gyro_scale": "raw counts per deg/s (gyro_unit=raw), e.g. 131 for MPU-6050 at 250 deg/s",
        "delimiter": "one character, or comma | tab | space | semicolon; default comma",
    },
    "witmotion": {
        "accel_range_g": "accelerometer full scale in g; default 16",
        "gyro_range_dps": "gyroscope full scale in deg/s; default 2000",
    },
    "bno08x-rvc": {},
    "mavlink": {
        "message": "auto | HIGHRES_IMU | SCALED_IMU | RAW_IMU; default auto (the first IMU message seen)",
        "imu_id": "IMU instance of HIGHRES_IMU/RAW_IMU; default 0",
        "accel_scale": "RAW_IMU raw counts per g",
        "gyro_scale": "RAW_IMU raw counts per deg/s",
    },
}


@dataclass(frozen=True)
class ImuSerialConfig:
    """How to open a serial IMU.

    Attributes:
        port: device path, e.g. ``/dev/ttyUSB0`` or a ``/dev/serial/by-id/...`` link.
        protocol: ``csv``, ``witmotion``, ``bno08x-rvc`` or ``mavlink``.
        baud: line speed in baud (8N1).
        rate_hz: nominal sample rate; None = estimated from arrival times.
        probe_s: how long opening waits for the rate estimate when ``rate_hz`` is None.
        queue_s: seconds of samples kept unread before the oldest chunk is dropped.
        exclusive: take an exclusive lock on the port (a busy port fails to open).
        backoff_max_s: cap of the exponential reopen backoff after a disconnect.
        options: the protocol's parameters (see ``PROTOCOL_PARAMS``), as given.
    """

    port: str
    protocol: str
    baud: int = 115200
    rate_hz: float | None = None
    probe_s: float = 1.0
    queue_s: float = 2.0
    exclusive: bool = True
    backoff_max_s: float = 2.0
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_uri(cls, uri: SourceUri) -> ImuSerialConfig:
        """Build from ``serial://<path>?protocol=...``; unknown protocol or parameter lists the valid ones."""
        protocol = uri.params.get("protocol", "")
        if protocol not in PROTOCOL_PARAMS:
            raise ConfigError(f"{uri.text}: protocol={protocol or '(missing)'!r}; valid: {', '.join(PROTOCOL_PARAMS)}")
        uri.check_params({**COMMON_PARAMS, **PROTOCOL_PARAMS[protocol]})
        config = cls(
            port=uri.target,
            protocol=protocol,
            baud=uri.get("baud", 115200, int),
            rate_hz=uri.get("rate_hz", None, float),
            probe_s=uri.get("probe_s", 1.0, float),
            queue_s=uri.get("queue_s", 2.0, float),
            exclusive=uri.get("exclusive", True, bool),
            options={k: v for k, v in uri.params.items() if k in PROTOCOL_PARAMS[protocol]},
        )
        if not config.port:
            raise ConfigError(f"{uri.text}: no port path, e.g. serial:///dev/ttyUSB0?protocol={protocol}")
        if config.baud <= 0 or (config.rate_hz is not None and config.rate_hz <= 0) or config.queue_s <= 0:
            raise ConfigError(f"{uri.text}: baud, rate_hz and queue_s must be positive")
        build_parser(config, uri)  # validate protocol options now, with the URI in the message
        return config


def build_parser(config: ImuSerialConfig, uri: SourceUri) -> ImuParser:
    """A fresh parser for ``config.protocol`` (raises ConfigError / SourceError for pymavlink)."""
    if config.protocol == "csv":
        return CsvParser(_csv_config(uri))
    if config.protocol == "witmotion":
        return WitmotionParser(uri.get("accel_range_g", 16.0, float), uri.get("gyro_range_dps", 2000.0, float))
    if config.protocol == "bno08x-rvc":
        return Bno08xRvcParser()
    return MavlinkParser(_mavlink_config(uri))


def _mavlink_config(uri: SourceUri) -> MavlinkConfig:
    valid = ("auto", "HIGHRES_IMU", "SCALED_IMU", "RAW_IMU")
    config = MavlinkConfig(
        uri.get("message", "auto"),
        uri.get("imu_id", 0, int),
        uri.get("accel_scale", None, float),
        uri.get("gyro_scale", None, float),
    )
    if config.message not in valid:
        raise ConfigError(f"{uri.text}: message={config.message!r}; valid: {', '.join(valid)}")
    if config.message == "RAW_IMU" and not (config.accel_scale and config.gyro_scale):
        raise ConfigError(f"{uri.text}: message=RAW_IMU needs accel_scale (counts/g) and gyro_scale (counts/(deg/s))")
    return config


def _csv_config(uri: SourceUri) -> CsvConfig:
    names = {"comma": ",", "tab": "\t", "space": " ", "semicolon": ";"}
    delimiter = uri.get("delimiter", ",")
    delimiter = names.get(delimiter, delimiter)
    columns = tuple(c.strip() for c in uri.get("columns", ",".join(IMU_CHANNELS)).split(","))
    config = CsvConfig(
        columns,
        uri.get("accel_unit", "m/s2"),
        uri.get("gyro_unit", "rad/s"),
        uri.get("accel_scale", None, float),
        uri.get("gyro_scale", None, float),
        delimiter,
    )
    known = {*IMU_CHANNELS, *TIME_COLUMNS, "_"}
    bad = [c for c in columns if c not in known]
    if bad or any(columns.count(c) != 1 for c in IMU_CHANNELS) or sum(c in TIME_COLUMNS for c in columns) > 1:
        raise ConfigError(
            f"{uri.text}: columns must name ax,ay,az,gx,gy,gz once each, at most one of "
            f"t_us,t_ms,t_s, and _ to skip; got {','.join(columns)!r}"
        )
    for name, unit, valid, scale in (
        ("accel", config.accel_unit, ("g", "m/s2", "raw"), config.accel_scale),
        ("gyro", config.gyro_unit, ("deg/s", "rad/s", "raw"), config.gyro_scale),
    ):
        if unit not in valid:
            raise ConfigError(f"{uri.text}: {name}_unit={unit!r}; valid: {', '.join(valid)}")
        if unit == "raw" and not (scale and scale > 0):
            raise ConfigError(f"{uri.text}: {name}_unit=raw needs a positive {name}_scale (counts per unit)")
    if len(delimiter) != 1 or delimiter in "\r\n.-+0123456789eE":
        raise ConfigError(f"{uri.text}: delimiter must be one character or comma|tab|space|semicolon")
    return config


def import_pyserial(uri: str) -> ModuleType:
    """Import pyserial, or raise one-line SourceError naming the package."""
    try:
        import serial
    except ImportError:
        raise SourceError(f"{uri}: the pyserial library is missing (pip install pyserial)") from None
    return serial


def _open_error(uri: str, path: str, exc: BaseException) -> SourceError:
    detail = " ".join(str(exc).split())
    errno = getattr(exc, "errno", None)
    if "lock" in detail.lower() or errno == 11:
        hint = " (port busy: another process holds it open)"
    elif errno == 2 or "No such file" in detail:
        hint = " (is the device plugged in? see ls /dev/serial/by-id)"
    elif errno == 13 or "ermission" in detail:
        hint = " (add the user to the dialout group)"
    else:
        hint = ""
    return SourceError(f"{uri}: cannot open serial port {path}: {detail}{hint}")


class ImuSerialSource:
    """A serial IMU as a :class:`runtime.sources.SampleSource` with one ``"imu"`` stream.

    Values are (N, 6) float32: ax, ay, az in m/s^2 then gx, gy, gz in rad/s (``bno08x-rvc``:
    yaw, pitch, roll in rad instead of a rate it does not measure; see ``streams[0].channels``).
    ``t_ns`` comes from :class:`ArrivalClock`; ``device_t_ns`` from the protocol's time field
    (csv time column, MAVLink ``time_usec``/``time_boot_ms``), else None. A reader thread
    parses the port; parsed chunks wait in a queue of ``queue_s`` (the oldest dropped first,
    counted in ``dropped["queue_overflow"]`` in samples). Parser drops are counted by reason
    (``garbage_bytes`` in bytes; ``bad_checksum``, ``truncated``, ``bad_line``, ``unpaired``,
    ``unknown_type``, ... in frames). A failing port counts ``errors["disconnect"]`` (its partial
    frame in ``dropped["disconnect_bytes"]``) and is reopened with exponential backoff capped at
    ``backoff_max_s``; each success counts in ``reconnects``.
    """

    def __init__(self, config: ImuSerialConfig, uri: SourceUri) -> None:
        """Open the port and start reading.

        Raises:
            ConfigError: bad protocol options.
            SourceError: pyserial/pymavlink missing, or the port is missing, busy or unusable.
        """
        self.uri = uri.text
        self._config = config
        self._serial = import_pyserial(uri.text)
        self._parser = build_parser(config, uri)
        self._counters = Counters()
        self._clock = ArrivalClock(config.rate_hz)
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64] | None]]
        self._queue = collections.deque()
        self._queued = 0
        self._max_queued = max(64, round(config.queue_s * (config.rate_hz or 1000.0)))
        self._stop = threading.Event()
        self._port: Any = self._open_port()  # the first open fails loudly; later ones are retried
        self._thread = threading.Thread(target=self._run, name=f"imu-{config.port}", daemon=True)
        self._thread.start()
        rate_hz = config.rate_hz or self._probe_rate()
        if rate_hz:
            self._max_queued = max(64, round(config.queue_s * rate_hz))
        self.streams = (self._stream_info(rate_hz),)

    @classmethod
    def from_uri(cls, uri: SourceUri) -> ImuSerialSource:
        """Open ``serial:///dev/ttyUSB0?protocol=...&baud=...`` (see ``COMMON_PARAMS``, ``PROTOCOL_PARAMS``)."""
        return cls(ImuSerialConfig.from_uri(uri), uri)

    def _stream_info(self, rate_hz: float | None) -> StreamInfo:
        extra: dict[str, object] = {
            "port": self._config.port,
            "protocol": self._config.protocol,
            "baud": self._config.baud,
            "rate_estimated": self._config.rate_hz is None,
            "device_time": self._config.protocol == "mavlink"
            or any(c in TIME_COLUMNS for c in self._config.options.get("columns", "").split(",")),
        }
        if self._parser.channels != IMU_CHANNELS:
            extra["gyro"] = "none: UART-RVC reports no angular rate; channels 3-5 are yaw, pitch, roll (rad)"
        channels = self._parser.channels
        return StreamInfo(STREAM_ID, Modality.IMU, self._parser.units, rate_hz, channels, (6,), "float32", extra)

    def _probe_rate(self) -> float | None:
        """Wait up to ``probe_s`` for the clock's rate estimate; 3 significant digits, or None."""
        deadline_s = time.monotonic() + self._config.probe_s
        while time.monotonic() < deadline_s and not self._stop.is_set():
            with self._cond:
                rate_hz = self._clock.rate_hz
            if rate_hz:
                return float(f"{rate_hz:.3g}")
            time.sleep(0.02)
        _LOG.warning("%s: no rate estimate after %.1f s; streams[0].rate_hz is None", self.uri, self._config.probe_s)
        return None

    def _open_port(self) -> Any:
        serial, config = self._serial, self._config
        try:
            return serial.Serial(config.port, config.baud, timeout=_READ_TIMEOUT_S, exclusive=config.exclusive)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise _open_error(self.uri, config.port, exc) from None

    def _run(self) -> None:
        """Reader thread: read, parse, stamp, enqueue; on failure reopen with backoff."""
        delay_s = _BACKOFF_START_S
        while not self._stop.is_set():
            if self._port is None:
                try:
                    self._port = self._open_port()
                except SourceError as exc:
                    _LOG.debug("%s: reopen failed: %s", self.uri, exc)
                    self._stop.wait(delay_s)
                    delay_s = min(2 * delay_s, self._config.backoff_max_s)
                    continue
                delay_s = _BACKOFF_START_S
                self._counters.reconnected()
                _LOG.warning("%s: serial port reopened", self.uri)
            try:
                data = self._port.read(self._port.in_waiting or 1)
            except (self._serial.SerialException, OSError) as exc:
                self._disconnected(exc)
                continue
            if data:
                self._ingest(data, time.monotonic_ns())

    def _ingest(self, data: bytes, arrival_ns: int) -> None:
        chunk = self._parser.feed(data)
        for reason, n in chunk.drops.items():
            self._counters.drop(reason, n)
        if not len(chunk):
            return
        with self._cond:
            t_ns = self._clock.stamp(arrival_ns, len(chunk))
            self._queue.append((t_ns, chunk.values, chunk.device_t_ns))
            self._queued += len(chunk)
            while self._queued > self._max_queued and len(self._queue) > 1:
                old = self._queue.popleft()[0]
                self._queued -= len(old)
                self._counters.drop("queue_overflow", len(old))
            self._cond.notify_all()

    def _disconnected(self, exc: BaseException) -> None:
        self._counters.error("disconnect")
        _LOG.warning("%s: serial port failed (%s); reopening with backoff", self.uri, " ".join(str(exc).split()))
        self._close_port()
        lost = self._parser.reset()
        if lost:
            self._counters.drop("disconnect_bytes", lost)
        with self._cond:
            self._clock.restart()

    def read(self, timeout_s: float) -> Samples | None:
        """Every queued sample as one chunk, waiting at most ``timeout_s`` for the first.

        Returns:
            ``Samples`` with ``t_ns`` (N,) int64 monotonic ns, ``values`` (N, 6) float32
            (see ``streams[0]``), ``device_t_ns`` (N,) int64 or None; None if nothing arrived.
        """
        with self._cond:
            if not self._queue:
                self._cond.wait(max(0.0, timeout_s))
            if not self._queue:
                return None
            chunks = list(self._queue)
            self._queue.clear()
            self._queued = 0
        t_ns = np.concatenate([c[0] for c in chunks])
        values = np.concatenate([c[1] for c in chunks])
        device = [c[2] for c in chunks]
        device_t_ns = None if any(d is None for d in device) else np.concatenate(device)  # type: ignore[arg-type]
        self._counters.delivered(STREAM_ID, len(t_ns))
        return Samples(STREAM_ID, Modality.IMU, t_ns, values, device_t_ns)

    def stats(self) -> SourceStats:
        """Counters: samples delivered, drops by reason, ``disconnect`` errors, reconnects."""
        return self._counters.snapshot()

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception as exc:  # a vanished device may fail in any way; keep going
                _LOG.debug("%s: closing the port failed: %s", self.uri, exc)

    def close(self) -> None:
        """Stop the reader thread and close the port; idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._close_port()

    def __enter__(self) -> ImuSerialSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
