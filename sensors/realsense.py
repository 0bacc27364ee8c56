"""``realsense://``: Intel RealSense depth in metres through pyrealsense2, live or from a ``.db3``.

``realsense://?serial=...&stream=depth&width=&height=&fps=&align=color|none`` opens a camera;
``file=REC.db3`` plays a recording through the same ``rs.pipeline`` code. Depth is
``z16 * depth_units`` as float32 metres; **0 m means no measurement** and stays 0
(runtime/preprocess/depth.py treats <= 0 as invalid). pyrealsense2 is imported lazily.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import ConfigError
from runtime.sources import Counters, SourceError, SourceUri
from runtime.types import Modality, StreamInfo
from sensors.frames import CaptureConfig, Frame, FrameCapture, FrameSource

PARAMS = {
    "serial": "camera serial number (default: the only/first camera)",
    "stream": "depth",
    "width": "pixels, 0 = device default",
    "height": "pixels, 0 = device default",
    "fps": "frames per second, 0 = device default",
    "align": "none|color (align depth to the colour camera)",
    "file": "a recording (.db3) to play instead of a camera",
    "pace": "realtime|fast (file playback)",
    "stall_s": "seconds without a frame before reconnecting, default 2",
}


@dataclass(frozen=True)
class RealSenseConfig:
    """Settings of one ``realsense://`` source."""

    serial: str = ""  # camera serial; "" = the first connected camera (or the recording's)
    stream: str = "depth"  # only depth is delivered
    width: int = 0  # requested depth width in pixels, 0 = any
    height: int = 0  # requested depth height in pixels, 0 = any
    fps: int = 0  # requested depth rate in Hz, 0 = any
    align: str = "none"  # none | color: rs.align depth into the colour camera's view
    file: str = ""  # recording (.db3) played through the same pipeline code
    pace: str = "realtime"  # file playback: realtime | fast (set_real_time(False), no frame skipped)
    stall_s: float = 2.0  # live: no frame for this long → stall, reconnect

    def __post_init__(self) -> None:
        if self.stream != "depth":
            raise ConfigError(f"realsense: stream={self.stream!r} is not supported; valid: depth")
        if self.align not in ("none", "color") or self.pace not in ("realtime", "fast"):
            raise ConfigError(f"realsense: align must be none|color and pace realtime|fast ({self})")
        if min(self.width, self.height, self.fps) < 0 or self.stall_s <= 0:
            raise ConfigError(f"realsense: width, height, fps and stall_s must be positive ({self})")


def import_rs(uri: str) -> Any:
    """pyrealsense2, or a one-line SourceError saying how to install it."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        raise SourceError(
            f"{uri}: pyrealsense2 is not importable ({exc}); `pip install pyrealsense2` "
            "and the system libusb (`apt-get install libusb-1.0-0`)"
        ) from None
    return rs


class _RsDevice:
    """A started ``rs.pipeline`` delivering depth frames (used by the capture thread only)."""

    def __init__(self, rs: Any, config: RealSenseConfig, uri: str) -> None:
        self._rs, self._uri = rs, uri
        ctx, loaded = _context(rs, config, uri)
        self._ctx, self._loaded = ctx, loaded  # the context forgets a loaded device nobody references
        device = _select_device(rs, ctx, config, uri) if loaded is None else _check_serial(rs, loaded, config, uri)
        self.name = _info(rs, device, "name")
        self.serial = _info(rs, device, "serial_number")
        self._playback = device.as_playback() if device.is_playback() else None
        cfg = rs.config()
        if self._playback is None:
            cfg.enable_device(self.serial)
        cfg.enable_stream(rs.stream.depth, config.width, config.height, rs.format.z16, config.fps)
        self._align = None
        if config.align == "color":
            if not _has_stream(rs, device, rs.stream.color):
                raise SourceError(f"{uri}: align=color but {self.name} has no colour stream; use align=none")
            cfg.enable_stream(rs.stream.color)
            self._align = rs.align(rs.stream.color)
        self._pipe = rs.pipeline(ctx)
        # rs.pipeline hands frames over through a one-frame queue: a reader that falls behind
        # loses frames inside librealsense. Frame-number gaps count them (frames_lost).
        self._last_number: int | None = None
        try:
            profile = self._pipe.start(cfg)
        except RuntimeError as exc:
            raise SourceError(f"{uri}: cannot start depth {_mode(config)} on {self.name}: {exc}") from None
        if self._playback is not None:
            # pipeline.start() turns real time back on (measured, 2.59.1), so this comes after it;
            # a frame lost in between is counted through the frame-number gap.
            profile.get_device().as_playback().set_real_time(config.pace == "realtime")
        try:
            self.depth_scale_m = float(profile.get_device().first_depth_sensor().get_depth_scale())
            view = profile.get_stream(rs.stream.color if self._align else rs.stream.depth).as_video_stream_profile()
            self.shape = (int(view.height()), int(view.width()))
            self.fps = float(profile.get_stream(rs.stream.depth).fps())
        except RuntimeError as exc:
            self._pipe.stop()
            raise SourceError(f"{uri}: {self.name} reports no depth scale: {exc}") from None

    def grab(self, timeout_s: float) -> Frame | None:
        """Next depth frame in metres; EOFError when a recording has been played to the end."""
        ok, frames = self._pipe.try_wait_for_frames(max(int(timeout_s * 1000), 1))
        if not ok:
            if self._playback is not None and self._playback.current_status() == self._rs.playback_status.stopped:
                raise EOFError(f"{self._uri}: end of recording")
            return None
        t_ns = time.monotonic_ns()
        if self._align is not None:
            frames = self._align.process(frames)
        depth = frames.get_depth_frame()
        if not depth:
            return None
        raw = np.asanyarray(depth.get_data())
        # The frame's own units: right even if depth_units is changed while streaming.
        metres = (raw.astype(np.float64) * depth.get_units()).astype(np.float32)
        number = int(depth.get_frame_number())
        lost = 0 if self._last_number is None else max(number - self._last_number - 1, 0)
        self._last_number = number
        return Frame(metres, t_ns, round(depth.get_timestamp() * 1e6), lost)

    def close(self) -> None:
        self._pipe.stop()


def _context(rs: Any, config: RealSenseConfig, uri: str) -> tuple[Any, Any]:
    """A context with the cameras, or with only the recording (software-device mask) and its device."""
    if not config.file:
        return rs.context(), None
    path = Path(config.file)
    if not path.is_file():
        raise SourceError(f"{uri}: no recording {config.file}")
    # sw_only: a connected camera with the recording's serial must not be picked instead.
    ctx = rs.context(json.dumps({"device-mask": int(rs.product_line.sw_only)}))
    try:
        loaded = ctx.load_device(str(path))  # keep it: the context drops a collected device
    except RuntimeError as exc:
        raise SourceError(f"{uri}: cannot play {config.file}: {exc} (librealsense 2.59 plays .db3)") from None
    return ctx, loaded


def _select_device(rs: Any, ctx: Any, config: RealSenseConfig, uri: str) -> Any:
    devices = list(ctx.query_devices())
    serials = [_info(rs, d, "serial_number") for d in devices]
    if not devices:
        raise SourceError(f"{uri}: no RealSense camera connected (check the USB cable and udev rules)")
    if not config.serial:
        return devices[0]
    if config.serial not in serials:
        raise SourceError(f"{uri}: no RealSense with serial {config.serial}; connected: {', '.join(serials)}")
    return devices[serials.index(config.serial)]


def _check_serial(rs: Any, device: Any, config: RealSenseConfig, uri: str) -> Any:
    serial = _info(rs, device, "serial_number")
    if config.serial and config.serial != serial:
        raise SourceError(f"{uri}: no RealSense with serial {config.serial}; connected: {serial or '(no serial)'}")
    return device


def _info(rs: Any, device: Any, key: str) -> str:
    info = getattr(rs.camera_info, key)
    try:
        return str(device.get_info(info)) if device.supports(info) else ""
    except RuntimeError:  # a recording may claim support without storing the value
        return ""


def _has_stream(rs: Any, device: Any, stream: Any) -> bool:
    return any(p.stream_type() == stream for s in device.query_sensors() for p in s.get_stream_profiles())


def _mode(config: RealSenseConfig) -> str:
    return f"{config.width or 'any'}x{config.height or 'any'}@{config.fps or 'any'}Hz"


class RealSenseSource(FrameSource):
    """Depth from a RealSense camera or recording: stream ``depth``, (N, H, W) float32 metres, 0 = invalid.

    ``device_t_ns`` is the frame's device timestamp (``frame.get_timestamp()``, ms → ns,
    in the frame's timestamp domain); ``t_ns`` is the host arrival time.
    """

    def __init__(self, config: RealSenseConfig, *, uri: str = "") -> None:
        self.uri = uri or "realsense://"
        self.config = config
        rs = import_rs(self.uri)
        device = _RsDevice(rs, config, self.uri)
        self.streams = (
            StreamInfo(
                stream_id="depth",
                modality=Modality.DEPTH,
                units="m",
                rate_hz=device.fps,
                channels=(),
                sample_shape=device.shape,
                dtype="float32",
                extra={
                    "depth_scale_m": device.depth_scale_m,
                    "serial": device.serial,
                    "name": device.name,
                    "aligned_to": config.align,
                    "file": config.file,
                },
            ),
        )
        live = not config.file
        self._capture = FrameCapture(
            device,
            self.streams[0],
            reopen=(lambda: _RsDevice(rs, config, self.uri)) if live else None,
            config=CaptureConfig(lossless=not live, stall_s=config.stall_s),
            counters=Counters(),
            uri=self.uri,
        )

    @classmethod
    def from_uri(cls, uri: SourceUri) -> RealSenseSource:
        """Build from ``realsense://?serial=...&file=...`` (see :data:`PARAMS`)."""
        uri.check_params(PARAMS)
        config = RealSenseConfig(
            serial=uri.get("serial", ""),
            stream=uri.get("stream", "depth"),
            width=uri.get("width", 0, int),
            height=uri.get("height", 0, int),
            fps=uri.get("fps", 0, int),
            align=uri.get("align", "none"),
            file=uri.get("file", ""),
            pace=uri.get("pace", "realtime"),
            stall_s=uri.get("stall_s", 2.0, float),
        )
        return cls(config, uri=uri.text)
