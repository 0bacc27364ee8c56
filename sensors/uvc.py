"""``uvc://``: 16-bit UVC depth and radiometric thermal cameras (and their recordings) via OpenCV.

``uvc:///dev/video2?format=y16&kind=thermal`` opens a device; a path or ``%04d`` pattern
(``uvc://frames/f_%04d.png?kind=thermal``) plays files through the same decode code.
Values: ``kind=thermal`` 16-bit → kelvin (``raw * scale``; PureThermal/Lepton TLinear
centi-kelvin: scale 0.01), ``layout=p2pro`` (InfiRay P2 Pro / Topdon TC001, 256x384:
bottom half is raw uint16 little-endian at 1/64 K); ``kind=depth`` 16-bit → metres
(``raw * scale``, default 0.001). An 8-bit thermal stream is delivered as float32
0..255 with units ``"intensity8"`` and ``extra["radiometric"] = False`` (never kelvin).
OpenCV is imported only when a source opens.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import ConfigError
from runtime.sources import Counters, SourceError, SourceUri
from runtime.types import Modality, StreamInfo
from sensors.frames import CaptureConfig, Frame, FrameCapture, FrameSource

PARAMS = {
    "kind": "thermal|depth",
    "format": "y16|yuyv|grey|auto (device pixel format; default y16, yuyv for layout=p2pro)",
    "layout": "plain|p2pro",
    "width": "pixels (device)",
    "height": "pixels (device)",
    "fps": "frames per second (device; file pacing)",
    "scale": "K or m per raw unit (default 0.01 thermal, 1/64 p2pro, 0.001 depth)",
    "pace": "realtime|fast (files)",
    "stall_s": "seconds without a frame before reconnecting, default 2",
}
_PATTERN = re.compile(r"%0?\d*d")  # printf frame-number pattern of an image sequence
_FOURCC = {"y16": "Y16 ", "yuyv": "YUYV", "grey": "GREY"}
P2PRO_WIDTH, P2PRO_HEIGHT = 256, 384  # whole UVC frame; each half is 256x192
P2PRO_SCALE_K = 1.0 / 64.0  # kelvin per raw unit of the bottom half


@dataclass(frozen=True)
class UvcConfig:
    """Settings of one ``uvc://`` source (see the module docstring for units)."""

    target: str  # /dev/videoN, a device index, a video file or an image-sequence pattern
    kind: str = "thermal"  # thermal | depth
    format: str = ""  # y16 | yuyv | grey | auto; "" = y16, or yuyv for layout=p2pro
    layout: str = "plain"  # plain | p2pro
    width: int = 0  # requested device width, 0 = device default
    height: int = 0  # requested device height, 0 = device default
    fps: float = 0.0  # requested device rate; file pacing rate (0: the file's own, if any)
    scale: float = 0.0  # physical units per raw count; 0 = the kind/layout default
    pace: str = "realtime"  # files: realtime (at fps) | fast (as fast as read)
    stall_s: float = 2.0  # live: no frame for this long → stall, reconnect

    def __post_init__(self) -> None:
        checks = {
            "kind": (self.kind, ("thermal", "depth")),
            "format": (self.format, ("", "auto", *_FOURCC)),
            "layout": (self.layout, ("plain", "p2pro")),
            "pace": (self.pace, ("realtime", "fast")),
        }
        for name, (value, valid) in checks.items():
            if value not in valid:
                raise ConfigError(f"uvc: {name}={value!r} is not one of {', '.join(v for v in valid if v)}")
        if self.scale < 0 or self.stall_s <= 0 or min(self.width, self.height, self.fps) < 0:
            raise ConfigError(f"uvc: scale, stall_s, width, height and fps must be positive ({self})")

    @property
    def is_device(self) -> bool:
        """True for a live camera (``/dev/...`` or an index), False for files."""
        return self.target.startswith("/dev/") or self.target.isdigit()

    @property
    def scale_per_unit(self) -> float:
        """Kelvin (thermal) or metres (depth) per raw 16-bit count."""
        if self.scale:
            return self.scale
        if self.kind == "depth":
            return 0.001
        return P2PRO_SCALE_K if self.layout == "p2pro" else 0.01


def split_p2pro(frame: NDArray[Any]) -> NDArray[np.uint16]:
    """The radiometric bottom half of a P2 Pro style frame.

    Args:
        frame: the whole 256x384 frame, as OpenCV gives it with CONVERT_RGB=0:
            (384, 256, 2) or (1, 196608) uint8 YUYV bytes, or (384, 256) uint16
            whose words already hold the little-endian pairs (a 16-bit PNG).

    Returns:
        (192, 256) uint16 raw counts, 1/64 K each.
    """
    if frame.dtype == np.uint16 and frame.shape == (P2PRO_HEIGHT, P2PRO_WIDTH):
        return np.ascontiguousarray(frame[P2PRO_HEIGHT // 2 :])
    if frame.dtype == np.uint8 and frame.size == P2PRO_HEIGHT * P2PRO_WIDTH * 2:
        words = np.frombuffer(np.ascontiguousarray(frame).tobytes(), dtype="<u2")
        return words.reshape(P2PRO_HEIGHT, P2PRO_WIDTH)[P2PRO_HEIGHT // 2 :].astype(np.uint16)
    raise ValueError(f"not a 256x384 P2 Pro frame: {frame.dtype} {frame.shape}")


def decode_frame(frame: NDArray[Any], config: UvcConfig) -> NDArray[np.float32]:
    """One OpenCV frame to physical values.

    Args:
        frame: as ``VideoCapture.read`` returns it with CONVERT_RGB=0: (H, W)
            uint16 counts, (H, W) uint8, (H, W, 2) uint8 YUYV (Y = channel 0) or
            (H, W, 3) uint8 BGR; a P2 Pro frame for ``layout=p2pro``.

    Returns:
        (H, W) float32: kelvin or metres for 16-bit input (``raw * scale``,
        rounded once from float64), 0..255 intensities for 8-bit input.
    """
    if config.layout == "p2pro":
        frame = split_p2pro(frame)
    if frame.dtype == np.uint16 and frame.ndim == 2:
        return (frame.astype(np.float64) * config.scale_per_unit).astype(np.float32)
    if frame.dtype == np.uint8 and frame.ndim == 2:
        return frame.astype(np.float32)
    if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] in (2, 3):
        gray = frame[..., 0] if frame.shape[2] == 2 else _bgr_to_gray(frame)
        return gray.astype(np.float32)
    raise ValueError(f"unsupported frame {frame.dtype} {frame.shape}")


def _bgr_to_gray(frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
    import cv2

    gray: NDArray[np.uint8] = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return gray


def is_radiometric(frame: NDArray[Any], config: UvcConfig) -> bool:
    """True when ``frame`` holds 16-bit counts (physical units), False for 8-bit images."""
    return config.layout == "p2pro" or (frame.dtype == np.uint16 and frame.ndim == 2)


class _CvDevice:
    """An OpenCV capture; the first (probe) frame is kept and returned by the first grab."""

    def __init__(self, config: UvcConfig, uri: str) -> None:
        self._cfg, self._uri = config, uri
        self._cap = _open_capture(config, uri)
        ok, raw = self._cap.read()
        if not ok or raw is None:
            self._cap.release()
            raise SourceError(f"{uri}: opened but delivered no frame (check format= and that it streams)")
        self.probe: NDArray[Any] = raw
        self._pending: NDArray[Any] | None = raw
        self._period_ns = _file_period_ns(self._cap, config)
        self._due_ns = time.monotonic_ns()

    def grab(self, timeout_s: float) -> Frame | None:
        if self._period_ns:
            wait_ns = self._due_ns - time.monotonic_ns()
            if wait_ns > timeout_s * 1e9:
                time.sleep(max(timeout_s, 0.0))
                return None
            time.sleep(max(wait_ns, 0) / 1e9)
            self._due_ns += self._period_ns
        raw, self._pending = self._pending, None
        if raw is None:
            ok, raw = self._cap.read()
            if not ok or raw is None:
                if not self._cfg.is_device:
                    raise EOFError(f"{self._uri}: end of file")
                raise OSError("read() delivered no frame")
        return Frame(decode_frame(raw, self._cfg), time.monotonic_ns())

    def close(self) -> None:
        self._cap.release()


def _open_capture(config: UvcConfig, uri: str) -> Any:
    import cv2

    if config.is_device:
        if config.target.startswith("/dev/") and not os.path.exists(config.target):
            found = ", ".join(sorted(glob.glob("/dev/video*"))) or "none"
            raise SourceError(f"{uri}: no device {config.target} (video devices: {found})")
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(int(config.target) if config.target.isdigit() else config.target, api)
        fmt = config.format or ("yuyv" if config.layout == "p2pro" else "y16")
        if fmt != "auto":
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*_FOURCC[fmt]))
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, config.width), (cv2.CAP_PROP_FRAME_HEIGHT, config.height)):
            if value:
                cap.set(prop, value)
        if config.fps:
            cap.set(cv2.CAP_PROP_FPS, config.fps)
    else:
        api = cv2.CAP_IMAGES if "%" in config.target else cv2.CAP_ANY
        cap = cv2.VideoCapture(config.target, api)
    cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)  # keep 16-bit counts; no BGR conversion
    if not cap.isOpened():
        what = "cannot open the camera" if config.is_device else "no such file or no readable frames"
        raise SourceError(f"{uri}: {what} ({config.target})")
    return cap


def _file_period_ns(cap: Any, config: UvcConfig) -> int:
    """Pacing period for files played in real time (0: no pacing: live, fast, or unknown rate)."""
    import cv2

    if config.is_device or config.pace == "fast":
        return 0
    fps = config.fps or float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return round(1e9 / fps) if fps > 0 else 0


def _import_cv2(uri: str) -> None:
    try:
        import cv2  # noqa: F401
    except ImportError as exc:
        raise SourceError(
            f"{uri}: OpenCV is not importable ({exc}); `pip install opencv-python-headless` (or use JetPack's OpenCV)"
        ) from None


class UvcSource(FrameSource):
    """A 16-bit UVC depth/thermal camera or its recording as a SampleSource (stream ``depth``/``thermal``)."""

    def __init__(self, config: UvcConfig, *, uri: str = "") -> None:
        self.uri = uri or f"uvc://{config.target}"
        _import_cv2(self.uri)
        self.config = config
        device = _CvDevice(config, self.uri)
        self.streams = (_stream_info(device.probe, config),)
        if config.kind == "depth" and not self.streams[0].extra["radiometric"]:
            device.close()
            raise SourceError(f"{self.uri}: depth needs a 16-bit stream (format=y16); got 8-bit frames")
        capture_cfg = CaptureConfig(lossless=not config.is_device, stall_s=config.stall_s)
        self._capture = FrameCapture(
            device,
            self.streams[0],
            reopen=(lambda: _CvDevice(config, self.uri)) if config.is_device else None,
            config=capture_cfg,
            counters=Counters(),
            uri=self.uri,
        )

    @classmethod
    def from_uri(cls, uri: SourceUri) -> UvcSource:
        """Build from ``uvc://TARGET?kind=...&format=...`` (see :data:`PARAMS`)."""
        uri.check_params(PARAMS)
        target = uri.target
        if not target:
            raise ConfigError(f"{uri.text}: no device or file, e.g. uvc:///dev/video2?kind=thermal")
        config = UvcConfig(
            target=target,
            kind=uri.get("kind", "thermal"),
            format=uri.get("format", ""),
            layout=uri.get("layout", "plain"),
            width=uri.get("width", 0, int),
            height=uri.get("height", 0, int),
            fps=uri.get("fps", 0.0, float),
            scale=uri.get("scale", 0.0, float),
            pace=uri.get("pace", "realtime"),
            stall_s=uri.get("stall_s", 2.0, float),
        )
        return cls(config, uri=uri.text)


def _stream_info(probe: NDArray[Any], config: UvcConfig) -> StreamInfo:
    radiometric = is_radiometric(probe, config)
    shape = decode_frame(probe, config).shape
    units = ("m" if config.kind == "depth" else "K") if radiometric else "intensity8"
    extra: dict[str, object] = {"radiometric": radiometric, "layout": config.layout, "target": config.target}
    if radiometric:
        extra["scale_per_unit"] = config.scale_per_unit
    return StreamInfo(
        stream_id=config.kind,
        modality=Modality.DEPTH if config.kind == "depth" else Modality.THERMAL,
        units=units,
        rate_hz=config.fps or None,
        channels=(),
        sample_shape=tuple(shape),
        dtype="float32",
        extra=extra,
    )
