"""The bounded window queue between source threads and the inference thread.

At capacity a non-blocking :meth:`WindowQueue.put` drops the *oldest* window (a live
robot wants the freshest data) and counts it against that window's stream; a
blocking put (lossless replay) waits for room instead. :meth:`WindowQueue.take`
returns a batch: up to ``max_n`` windows, waiting at most ``deadline_s`` for it to
fill once the first window is there.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from runtime.types import Window


@dataclass(frozen=True)
class Job:
    """A window on its way to the encoder.

    Attributes:
        window: the window.
        key: its stream key (unique across the pipeline's sources).
        capture_ns: host monotonic ns of its last sample (see :mod:`runtime.pipeline`).
        ready_ns: host monotonic ns when the windower produced it.
    """

    window: Window
    key: str
    capture_ns: int
    ready_ns: int


class WindowQueue:
    """A thread-safe FIFO of at most ``capacity`` jobs with drop-oldest and per-stream drop counts."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[Job] = deque()
        self._cond = threading.Condition()
        self._dropped: dict[str, int] = {}

    def put(self, job: Job, block: bool, stop: threading.Event) -> bool:
        """Enqueue ``job``.

        Args:
            block: wait for room (until ``stop`` is set) instead of dropping the oldest.
            stop: ends a blocking wait; the job is then discarded.

        Returns:
            False if the job was discarded because ``stop`` was set while waiting.
        """
        with self._cond:
            while block and len(self._items) >= self.capacity:
                if stop.is_set():
                    return False
                self._cond.wait(0.05)
            if len(self._items) >= self.capacity:
                old = self._items.popleft()
                self._dropped[old.key] = self._dropped.get(old.key, 0) + 1
            self._items.append(job)
            self._cond.notify_all()
            return True

    def take(self, max_n: int, deadline_s: float, idle_s: float) -> list[Job]:
        """Up to ``max_n`` jobs; [] if none arrived within ``idle_s`` seconds.

        Once one job is there, waits up to ``deadline_s`` for ``max_n`` of them.
        """
        with self._cond:
            if not self._items:
                self._cond.wait(idle_s)
                if not self._items:
                    return []
            end = time.monotonic() + deadline_s
            while len(self._items) < max_n:
                left = end - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    break
            out = [self._items.popleft() for _ in range(min(max_n, len(self._items)))]
            self._cond.notify_all()  # room for blocked producers
            return out

    def wake(self) -> None:
        """Wake every waiter (stop, or a source ended)."""
        with self._cond:
            self._cond.notify_all()

    def dropped(self) -> dict[str, int]:
        """Windows dropped so far, per stream key."""
        with self._cond:
            return dict(self._dropped)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
