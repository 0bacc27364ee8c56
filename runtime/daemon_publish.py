"""The daemon's publisher thread: event log -> every enabled sink, resumable and retried.

Each sink has a cursor in the event log (:class:`runtime.eventlog.EventLog`); the thread
publishes the rows after it, oldest first, and moves the cursor after each batch. A sink
that cannot be opened or fails a publish is retried with exponential backoff (0.5 s doubling
to ``retry_max_s``) while the others go on; its events wait in the log. After a crash the
next run starts from the cursors, so every logged event is delivered at least once
(consumers de-duplicate by ``id``). Status dicts are published as each sink's retained status.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from runtime.eventlog import EventLog

_LOG = logging.getLogger("edgebind.publish")
RETRY_START_S = 0.5
BATCH = 256  # events per pending() read
IDLE_S = 0.5  # longest wait between passes without a wake-up


class Sink(Protocol):
    """What ``runtime.sinks.open_sink`` returns (D-bus's package)."""

    name: str

    def publish_event(self, event: dict[str, Any]) -> None: ...

    def publish_status(self, status: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass
class SinkSlot:
    """One sink and its retry state (touched by the publisher thread only; read by status)."""

    name: str
    opener: Callable[[], Sink]
    sink: Sink | None = None
    next_try_s: float = 0.0
    backoff_s: float = RETRY_START_S
    published: int = 0
    failures: int = 0
    last_error: str = ""
    status_sent: int = -1  # version of the status last published


class Publisher:
    """Publishes logged events and status to sinks from one thread (see the module docstring)."""

    def __init__(self, log: EventLog, openers: Mapping[str, Callable[[], Sink]], retry_max_s: float = 30.0) -> None:
        self._log, self._retry_max_s = log, retry_max_s
        self._slots = [SinkSlot(name, opener) for name, opener in openers.items()]
        self._cond = threading.Condition()
        self._stop = False
        self._status: dict[str, Any] | None = None
        self._status_version = 0
        self._thread = threading.Thread(target=self._run, name="edgebind-publish", daemon=True)
        self.heartbeat_ns = time.monotonic_ns()

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        """New events were logged: publish now."""
        with self._cond:
            self._cond.notify_all()

    def set_status(self, status: dict[str, Any]) -> None:
        """Publish ``status`` as every sink's retained status (latest wins)."""
        with self._cond:
            self._status, self._status_version = status, self._status_version + 1
            self._cond.notify_all()

    def stop(self, flush_timeout_s: float = 5.0) -> None:
        """One last pass (sinks that are up get every pending event), then close every sink."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(flush_timeout_s)
        if self._thread.is_alive():
            _LOG.warning("publisher still busy after %.1f s; pending events stay in the log", flush_timeout_s)
        for slot in self._slots:
            self._close(slot)

    def sinks(self) -> dict[str, dict[str, Any]]:
        """Per sink: open, published this run, failures, backlog (events not yet delivered), last error."""
        backlog = self._log.unpublished()
        return {s.name: _slot_status(s, backlog.get(s.name, 0)) for s in self._slots}

    # -- thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                stopping = self._stop
                status, version = self._status, self._status_version
            self.heartbeat_ns = time.monotonic_ns()
            for slot in self._slots:
                self._serve(slot, status, version, final=stopping)
            if stopping:
                return
            with self._cond:
                if not self._stop:
                    self._cond.wait(self._next_wait_s())

    def _next_wait_s(self) -> float:
        now = time.monotonic()
        waits = [s.next_try_s - now for s in self._slots if s.next_try_s > now]
        return max(0.01, min([IDLE_S, *waits]))

    def _serve(self, slot: SinkSlot, status: dict[str, Any] | None, version: int, final: bool) -> None:
        if time.monotonic() < slot.next_try_s and not final:
            return
        try:
            if slot.sink is None:
                slot.sink = slot.opener()
                _LOG.info("sink %s open", slot.name)
            self._drain_events(slot)
            if status is not None and slot.status_sent != version:
                slot.sink.publish_status(status)
                slot.status_sent = version
        except Exception as exc:  # a sink failure is retried; the daemon goes on
            self._failed(slot, exc)
            return
        slot.backoff_s = RETRY_START_S
        slot.last_error = ""

    def _drain_events(self, slot: SinkSlot) -> None:
        assert slot.sink is not None
        while True:
            batch = list(self._log.pending(slot.name, BATCH))
            if not batch:
                return
            last = 0
            try:
                for event_id, event in batch:
                    slot.sink.publish_event(event)
                    last = event_id
                    slot.published += 1
            finally:
                if last:
                    self._log.mark_published(slot.name, last)
            if len(batch) < BATCH:
                return

    def _failed(self, slot: SinkSlot, exc: Exception) -> None:
        slot.failures += 1
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        if message != slot.last_error:  # one line per distinct failure, not per retry
            _LOG.warning("sink %s failed (%s); retrying with backoff, events wait in the log", slot.name, message)
        slot.last_error = message
        slot.next_try_s = time.monotonic() + slot.backoff_s
        slot.backoff_s = min(2 * slot.backoff_s, self._retry_max_s)

    def _close(self, slot: SinkSlot) -> None:
        sink, slot.sink = slot.sink, None
        if sink is None:
            return
        try:
            sink.close()
        except Exception as exc:  # closing must not hide the other sinks
            _LOG.warning("sink %s: close failed: %s", slot.name, exc)


def _slot_status(slot: SinkSlot, backlog: int) -> dict[str, Any]:
    return {"open": slot.sink is not None, "published": slot.published, "failures": slot.failures,
            "backlog": backlog, "last_error": slot.last_error}  # fmt: skip
