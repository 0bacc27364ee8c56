"""Camera-frame capture shared by the depth/thermal sources: a capture thread, a bounded
queue (drop-oldest live, lossless for files), stall detection and reconnect with backoff.

Imports only numpy and runtime types; the device libraries stay in the source modules.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from runtime.sources import Counters, SourceError, SourceStats
from runtime.types import Samples, StreamInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """One decoded camera frame.

    Attributes:
        values: (H, W) float32 in the stream's physical units (metres, kelvin, ...).
        t_ns: host ``time.monotonic_ns()`` when the frame arrived.
        device_t_ns: the device's own timestamp in ns, or None if it has none.
        frames_lost: device frames known to be missing just before this one (frame-number gap).
    """

    values: NDArray[np.float32]
    t_ns: int
    device_t_ns: int | None = None
    frames_lost: int = 0


class FrameDevice(Protocol):
    """An opened camera (or recording) that the capture thread polls; used by one thread only."""

    def grab(self, timeout_s: float) -> Frame | None:
        """Next frame, or None if none came within about ``timeout_s``.

        Raises:
            EOFError: a finite source (a file) has no more frames.
            Exception: any other error means the device failed (counted, reconnected).
        """
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CaptureConfig:
    """How the capture thread queues frames and recovers from a failing device."""

    queue_frames: int = 4  # bounded queue length, frames
    lossless: bool = False  # True (files): block the reader thread instead of dropping the oldest
    stall_s: float = 2.0  # no frame for this long: counted "stall" and reconnected
    poll_s: float = 0.1  # longest single grab, so close() and stall checks stay responsive
    backoff_start_s: float = 0.1  # first wait before reopening
    backoff_max_s: float = 2.0  # cap of the exponential backoff
    max_chunk_frames: int = 8  # most frames one read() returns


_END = object()  # queue sentinel: the thread has finished (see FrameCapture._end)


class FrameCapture:
    """Runs ``device.grab`` on a daemon thread and hands frames to :meth:`read`.

    Live devices (``reopen`` given): a grab that raises counts ``disconnect``, no
    frame for ``stall_s`` counts ``stall``; both close the device and reopen it
    with exponential backoff (``reopen_failed`` per failed try, ``reconnects`` per
    success). Finite sources (``reopen`` None): EOFError ends the stream and any
    other error is re-raised from :meth:`read` as a one-line :class:`SourceError`.
    """

    def __init__(
        self,
        device: FrameDevice,
        info: StreamInfo,
        *,
        reopen: Callable[[], FrameDevice] | None,
        config: CaptureConfig,
        counters: Counters,
        uri: str,
    ) -> None:
        self._device: FrameDevice | None = device
        self._info, self._reopen, self._cfg = info, reopen, config
        self._counters, self._uri = counters, uri
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(config.queue_frames, 1))
        self._stop = threading.Event()
        self._end: BaseException | None = None
        self._logged: set[str] = set()
        self._thread = threading.Thread(target=self._run, name=f"capture {uri}", daemon=True)
        self._thread.start()

    def read(self, timeout_s: float) -> Samples | None:
        """Up to ``max_chunk_frames`` queued frames as one chunk, or None after ``timeout_s``.

        Returns:
            Samples with values (N, H, W) float32 and t_ns (N,) int64; device_t_ns
            (N,) int64 when every frame has a device timestamp.

        Raises:
            EOFError: a finite source has been read to the end.
            SourceError: a finite source failed, or the source was closed.
        """
        try:
            item = self._queue.get(timeout=max(timeout_s, 0.0))
        except queue.Empty:
            return None
        frames: list[Frame] = []
        while item is not _END:
            assert isinstance(item, Frame)
            frames.append(item)
            if len(frames) >= self._cfg.max_chunk_frames:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        if item is _END:
            self._queue.put_nowait(_END)  # taking it freed a slot; later reads see it again
            if not frames:
                raise self._end if self._end is not None else SourceError(f"{self._uri}: closed")
        return self._chunk(frames)

    def _chunk(self, frames: list[Frame]) -> Samples:
        t_ns = np.array([f.t_ns for f in frames], dtype=np.int64)
        dev = [f.device_t_ns for f in frames]
        dev_ns = None if any(d is None for d in dev) else np.array(dev, dtype=np.int64)
        values = np.stack([f.values for f in frames]).astype(np.float32, copy=False)
        self._counters.delivered(self._info.stream_id, len(frames))
        return Samples(self._info.stream_id, self._info.modality, t_ns, values, dev_ns)

    def stats(self) -> SourceStats:
        return self._counters.snapshot()

    def close(self, join_s: float = 2.0) -> None:
        """Stop the thread (it closes the device itself, even if it is stuck in a grab)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=join_s)

    # -- capture thread ---------------------------------------------------------------

    def _run(self) -> None:
        last_frame_s = time.monotonic()
        try:
            while not self._stop.is_set():
                frame = self._grab()
                if frame is not None:
                    last_frame_s = time.monotonic()
                    self._push(frame)
                elif self._device is None or (
                    self._reopen is not None and time.monotonic() - last_frame_s > self._cfg.stall_s
                ):
                    if self._device is not None:
                        self._note("stall", "no frame for more than %.1f s", self._cfg.stall_s)
                    self._reconnect()
                    last_frame_s = time.monotonic()
        except EOFError as exc:
            self._end = exc
        except Exception as exc:  # a finite source's failure ends it, reported by read()
            self._end = SourceError(f"{self._uri}: {type(exc).__name__}: {exc}".replace("\n", " "))
        finally:
            self._close_device()
            if self._end is None:
                self._end = SourceError(f"{self._uri}: closed")
            self._push(_END)

    def _grab(self) -> Frame | None:
        """One grab; a live device's failure is counted and returns None with the device closed."""
        if self._device is None:
            return None
        try:
            frame = self._device.grab(self._cfg.poll_s)
        except EOFError:
            raise
        except Exception as exc:
            if self._reopen is None:
                raise
            self._note("disconnect", "%s: %s", type(exc).__name__, exc)
            self._close_device()
            return None
        if frame is not None and frame.frames_lost:
            self._counters.drop("device_frames_lost", frame.frames_lost)
        if frame is not None and frame.values.shape != self._info.sample_shape:
            self._counters.drop("bad_shape")
            return None
        return frame

    def _reconnect(self) -> None:
        """Close the device and reopen it, waiting backoff_start_s, 2x, ... up to backoff_max_s."""
        assert self._reopen is not None
        self._close_device()
        backoff_s = self._cfg.backoff_start_s
        while not self._stop.wait(backoff_s):
            try:
                self._device = self._reopen()
            except Exception as exc:
                self._note("reopen_failed", "%s", exc)
                backoff_s = min(2 * backoff_s, self._cfg.backoff_max_s)
                continue
            self._counters.reconnected()
            log.info("%s: reconnected", self._uri)
            return

    def _push(self, item: object) -> None:
        """Queue ``item``: files (and the end marker) wait for room, live frames drop the oldest."""
        if self._cfg.lossless or item is _END:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=self._cfg.poll_s)
                    return
                except queue.Full:
                    continue
            if item is not _END:
                return
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self._counters.drop("queue_full")
                except queue.Empty:
                    pass

    def _close_device(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            try:
                device.close()
            except Exception as exc:  # already broken; closing is best effort
                log.debug("%s: close failed: %s", self._uri, exc)

    def _note(self, reason: str, fmt: str, *args: object) -> None:
        """Count an error event and log it the first time this reason occurs."""
        self._counters.error(reason)
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("%s: %s: " + fmt, self._uri, reason, *args)


class FrameSource:
    """Base of the camera sources: one stream fed by a :class:`FrameCapture`."""

    uri: str
    streams: tuple[StreamInfo, ...]
    _capture: FrameCapture

    def read(self, timeout_s: float) -> Samples | None:
        """Next frames, (N, H, W) float32 in ``streams[0].units``; None after ``timeout_s``."""
        return self._capture.read(timeout_s)

    def stats(self) -> SourceStats:
        return self._capture.stats()

    def close(self) -> None:
        self._capture.close()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
