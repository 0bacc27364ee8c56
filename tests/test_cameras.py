"""Depth/thermal camera sources with real parts: a RealSense .db3 made by pyrealsense2 itself,
16-bit PNG sequences read by OpenCV, and the capture machinery with scripted devices."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from runtime.errors import ConfigError
from runtime.sources import Counters, SampleSource, SourceError, open_source
from runtime.types import Modality, Samples, StreamInfo
from sensors.frames import CaptureConfig, Frame, FrameCapture

cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless) is not installed")


def _pyrealsense2() -> Any:
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # missing wheel, or the system libusb-1.0-0
        pytest.skip(f"pyrealsense2 not importable: {exc}")
    return rs


def read_all(source: SampleSource, limit_s: float = 10.0) -> list[Samples]:
    """Every chunk up to EOFError; fails instead of hanging."""
    chunks: list[Samples] = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            got = source.read(0.5)
        except EOFError:
            return chunks
        if got is not None:
            chunks.append(got)
    pytest.fail(f"{source.uri}: no EOFError within {limit_s} s")


# -- RealSense ---------------------------------------------------------------------------

RS_W, RS_H, RS_N = 320, 240, 20
RS_UNITS_M = 0.001
RS_T0_MS, RS_PERIOD_MS = 1000.0, 33.3


def rs_raw(i: int) -> NDArray[np.uint16]:
    """Frame i: (240, 320) uint16 mm, 1000 + 10 i with a ramp; row 0 is 0 = no measurement."""
    raw = np.full((RS_H, RS_W), 1000 + 10 * i, np.uint16) + np.arange(RS_W, dtype=np.uint16)
    raw[0] = 0
    return raw


def make_rs_recording(rs: Any, path: Path) -> None:
    """Record RS_N Z16 frames of a software device to a .db3, as a camera would be recorded."""
    dev = rs.software_device()
    dev.register_info(rs.camera_info.name, "Synthetic Depth")
    dev.register_info(rs.camera_info.serial_number, "SYN0001")
    sensor = dev.add_sensor("Depth")
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp = rs.stream.depth, 0, 0, RS_W, RS_H, 30, 2
    vs.fmt = rs.format.z16
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = RS_W, RS_H, 200.0, 200.0, RS_W / 2, RS_H / 2
    intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
    vs.intrinsics = intr
    profile = sensor.add_video_stream(vs)
    sensor.add_read_only_option(rs.option.depth_units, RS_UNITS_M)
    recorder = rs.recorder(str(path), dev)
    q = rs.frame_queue(RS_N + 5)
    sensor.open(profile)
    sensor.start(q)
    for i in range(RS_N):
        f = rs.software_video_frame()
        f.pixels, f.bpp, f.stride = rs_raw(i), 2, RS_W * 2
        f.timestamp, f.domain, f.frame_number = RS_T0_MS + i * RS_PERIOD_MS, rs.timestamp_domain.hardware_clock, i
        f.profile = profile.as_video_stream_profile()
        sensor.on_video_frame(f)
        q.wait_for_frame(1000)
        time.sleep(RS_PERIOD_MS / 1000)  # spaced as a camera would; the recorder keeps arrival times
    sensor.stop()
    sensor.close()
    del recorder  # closing the recorder writes the file


@pytest.fixture(scope="module")
def rs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rs = _pyrealsense2()
    path = tmp_path_factory.mktemp("rs") / "depth.db3"
    make_rs_recording(rs, path)
    assert path.stat().st_size > 0
    return path


def test_realsense_recording_replays_in_metres(rs_file: Path) -> None:
    with open_source(f"realsense://?file={rs_file}&pace=fast") as src:
        info = src.streams[0]
        chunks = read_all(src)
        stats = src.stats()
    assert (info.stream_id, info.modality, info.units, info.sample_shape) == ("depth", Modality.DEPTH, "m", (240, 320))
    assert info.rate_hz == 30 and info.extra["serial"] == "SYN0001" and info.extra["name"] == "Synthetic Depth"
    assert info.extra["depth_scale_m"] == pytest.approx(RS_UNITS_M)
    values = np.concatenate([c.values for c in chunks])
    device_ms = np.concatenate([c.device_t_ns for c in chunks if c.device_t_ns is not None]) / 1e6
    index = np.round((device_ms - RS_T0_MS) / RS_PERIOD_MS).astype(int)
    np.testing.assert_allclose(device_ms, RS_T0_MS + index * RS_PERIOD_MS, atol=1e-3)
    # librealsense's pipeline can lose a frame when the reader is starved of CPU; what
    # arrives must be right, in order, and every loss after the first frame is counted.
    assert np.all(np.diff(index) >= 1) and len(index) >= RS_N - 2
    assert len(index) + stats.dropped.get("device_frames_lost", 0) + index[0] == RS_N
    assert values.dtype == np.float32 and values.shape == (len(index), RS_H, RS_W)
    expected = np.stack([rs_raw(i) * RS_UNITS_M for i in index])
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    assert np.all(values[:, 0] == 0)  # invalid pixels stay exactly 0
    host = np.concatenate([c.t_ns for c in chunks])
    assert np.all(np.diff(host) >= 0) and stats.samples == {"depth": len(index)}


def test_realsense_serial_mismatch_lists_connected(rs_file: Path) -> None:
    with pytest.raises(SourceError, match=r"no RealSense with serial NOPE; connected: SYN0001$"):
        open_source(f"realsense://?file={rs_file}&serial=NOPE")


def test_realsense_unknown_serial_without_cameras() -> None:
    rs = _pyrealsense2()
    if len(rs.context().query_devices()):
        pytest.skip("a RealSense camera is connected")
    with pytest.raises(SourceError, match="no RealSense camera connected"):
        open_source("realsense://?serial=123456")


def test_realsense_bad_requests_are_one_line(rs_file: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no colour stream"):
        open_source(f"realsense://?file={rs_file}&align=color")
    with pytest.raises(SourceError, match="no recording"):
        open_source(f"realsense://?file={tmp_path / 'missing.db3'}")
    with pytest.raises(ConfigError, match="unknown parameter 'exposure'"):
        open_source("realsense://?exposure=3")


# -- UVC through OpenCV ------------------------------------------------------------------


def write_sequence(folder: Path, frames: list[NDArray[Any]]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        assert cv2.imwrite(str(folder / f"f_{i:04d}.png"), frame)
    return str(folder / "f_%04d.png")


def centikelvin(i: int) -> NDArray[np.uint16]:
    """(120, 160) uint16 Lepton TLinear counts: 20 °C .. 37 °C plus the frame number."""
    ramp = np.linspace(29315, 31015, 160).round().astype(np.uint16)
    return np.tile(ramp, (120, 1)) + np.uint16(i)


def test_thermal_y16_sequence_is_kelvin(tmp_path: Path) -> None:
    raw = [centikelvin(i) for i in range(6)]
    pattern = write_sequence(tmp_path / "lepton", raw)
    with open_source(f"uvc://{pattern}?kind=thermal&format=y16&pace=fast") as src:
        info = src.streams[0]
        values = np.concatenate([c.values for c in read_all(src)])
    assert (info.stream_id, info.modality, info.units, info.sample_shape) == (
        "thermal",
        Modality.THERMAL,
        "K",
        (120, 160),
    )
    assert info.extra["radiometric"] is True
    assert values.dtype == np.float32 and values.shape == (6, 120, 160)
    np.testing.assert_array_equal(values, np.stack([(r * 0.01).astype(np.float32) for r in raw]))


def test_p2pro_bottom_half_is_sixty_fourth_kelvin(tmp_path: Path) -> None:
    from sensors.uvc import split_p2pro

    rng = np.random.default_rng(0)
    raw = (np.linspace(293.15, 310.15, 192 * 256).reshape(192, 256) * 64).round().astype(np.uint16)
    preview = rng.integers(0, 256, (192, 256, 2), dtype=np.uint8)  # 8-bit AGC YUYV, ignored
    device_frame = np.concatenate([preview, raw.astype("<u2").view(np.uint8).reshape(192, 256, 2)])
    np.testing.assert_array_equal(split_p2pro(device_frame), raw)  # OpenCV YUYV, CONVERT_RGB=0
    np.testing.assert_array_equal(split_p2pro(device_frame.reshape(1, -1)), raw)
    word_frame = np.concatenate([preview.view("<u2")[..., 0], raw])  # as a 16-bit PNG holds it
    pattern = write_sequence(tmp_path / "p2pro", [word_frame, word_frame])
    with open_source(f"uvc://{pattern}?kind=thermal&layout=p2pro&pace=fast") as src:
        assert src.streams[0].sample_shape == (192, 256) and src.streams[0].units == "K"
        values = np.concatenate([c.values for c in read_all(src)])
    np.testing.assert_array_equal(values, np.stack([raw / 64.0, raw / 64.0]).astype(np.float32))


def test_thermal_8bit_is_flagged_non_radiometric(tmp_path: Path) -> None:
    frames = [np.full((60, 80), 40 * i, np.uint8) for i in range(3)]
    pattern = write_sequence(tmp_path / "gray", frames)
    with open_source(f"uvc://{pattern}?kind=thermal&pace=fast") as src:
        info = src.streams[0]
        values = np.concatenate([c.values for c in read_all(src)])
    assert info.units == "intensity8" and info.extra["radiometric"] is False
    np.testing.assert_array_equal(values, np.stack(frames).astype(np.float32))
    with pytest.raises(SourceError, match="depth needs a 16-bit stream"):
        open_source(f"uvc://{pattern}?kind=depth")


def test_depth_y16_sequence_is_metres(tmp_path: Path) -> None:
    mm = [np.full((48, 64), 500 * (i + 1), np.uint16) for i in range(3)]
    mm[0][0, 0] = 0
    pattern = write_sequence(tmp_path / "depth", mm)
    with open_source(f"uvc://{pattern}?kind=depth&pace=fast") as src:
        info = src.streams[0]
        values = np.concatenate([c.values for c in read_all(src)])
    assert (info.modality, info.units, info.extra["scale_per_unit"]) == (Modality.DEPTH, "m", 0.001)
    np.testing.assert_array_equal(values, np.stack([(m * 0.001).astype(np.float32) for m in mm]))
    with open_source(f"uvc://{pattern}?kind=depth&scale=0.0001&pace=fast") as src:
        assert float(read_all(src)[0].values[0, 1, 1]) == pytest.approx(0.05)


def test_uvc_open_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no device /dev/video99 \(video devices: "):
        open_source("uvc:///dev/video99?kind=thermal")
    with pytest.raises(SourceError, match="no such file"):
        open_source(f"uvc://{tmp_path}/none_%04d.png?kind=thermal")
    with pytest.raises(ConfigError, match="unknown parameter 'gain'"):
        open_source("uvc:///dev/video0?gain=2")
    with pytest.raises(ConfigError, match="kind='rgb'"):
        open_source(f"uvc://{tmp_path}/x_%04d.png?kind=rgb")


def test_uvc_read_honours_timeout(tmp_path: Path) -> None:
    pattern = write_sequence(tmp_path / "slow", [centikelvin(i) for i in range(3)])
    with open_source(f"uvc://{pattern}?kind=thermal&fps=2") as src:  # realtime pace: 0.5 s apart
        assert src.read(2.0) is not None
        start = time.monotonic()
        assert src.read(0.05) is None
        assert time.monotonic() - start < 0.3


# -- capture machinery with scripted devices ---------------------------------------------

INFO = StreamInfo("depth", Modality.DEPTH, "m", 30.0, (), (2, 2), "float32")
FAST = CaptureConfig(stall_s=0.15, poll_s=0.01, backoff_start_s=0.01, backoff_max_s=0.04)


class ScriptedDevice:
    """Delivers frames valued 0, 1, ... then, per ``then``: "stall" (None), "fail" (OSError) or "eof"."""

    def __init__(self, frames: int, then: str, start: float = 0.0, period_s: float = 0.0) -> None:
        self._values: Iterator[float] = iter(start + np.arange(frames, dtype=float))
        self._then, self._period_s = then, period_s
        self.closed = False

    def grab(self, timeout_s: float) -> Frame | None:
        time.sleep(self._period_s)
        value = next(self._values, None)
        if value is None:
            if self._then == "fail":
                raise OSError("device went away")
            if self._then == "eof":
                raise EOFError("end")
            time.sleep(timeout_s)
            return None
        return Frame(np.full((2, 2), value, np.float32), time.monotonic_ns())

    def close(self) -> None:
        self.closed = True


def drain(capture: FrameCapture, until: float) -> list[float]:
    got: list[float] = []
    while time.monotonic() < until:
        chunk = capture.read(0.02)
        if chunk is not None:
            got.extend(chunk.values[:, 0, 0].tolist())
    return got


def test_stall_and_disconnect_reconnect_with_backoff() -> None:
    attempts: list[int] = []

    def reopen() -> ScriptedDevice:
        attempts.append(1)
        if len(attempts) <= 2:
            raise SourceError("not back yet")
        return ScriptedDevice(3, "stall", start=100)

    first = ScriptedDevice(3, "fail")
    capture = FrameCapture(first, INFO, reopen=reopen, config=FAST, counters=Counters(), uri="test://")
    got = drain(capture, time.monotonic() + 0.6)
    capture.close()
    stats = capture.stats()
    assert got[:3] == [0, 1, 2] and got[3:6] == [100, 101, 102] and first.closed
    assert stats.errors["disconnect"] == 1 and stats.errors["reopen_failed"] == 2
    assert stats.errors["stall"] >= 1 and stats.reconnects >= 2  # the stalled device was reopened too


def test_live_queue_drops_oldest_and_files_lose_nothing() -> None:
    live = FrameCapture(
        ScriptedDevice(50, "stall"),
        INFO,
        reopen=None,
        config=CaptureConfig(queue_frames=2),
        counters=Counters(),
        uri="test://live",
    )
    time.sleep(0.2)  # the consumer is late: only the newest frames are kept
    got = drain(live, time.monotonic() + 0.1)
    live.close()
    assert got == [48, 49] and live.stats().dropped["queue_full"] == 48
    finite = FrameCapture(
        ScriptedDevice(30, "eof"),
        INFO,
        reopen=None,
        config=CaptureConfig(queue_frames=2, lossless=True),
        counters=Counters(),
        uri="test://file",
    )
    time.sleep(0.1)
    got = []
    with pytest.raises(EOFError):
        while True:
            chunk = finite.read(1.0)
            assert chunk is not None
            got.extend(chunk.values[:, 0, 0].tolist())
    assert got == list(range(30))
    with pytest.raises(EOFError):  # and it stays at the end
        finite.read(0.01)
