"""The daemon's persistent event log: SQLite in WAL mode, written before anything is published.

Tables::

    events(id INTEGER PRIMARY KEY, ts_ns INTEGER, json TEXT)   -- every event, id = publish sequence
    sink_cursor(sink TEXT PRIMARY KEY, last_id INTEGER)       -- last id each sink delivered
    status(key TEXT PRIMARY KEY, ts_ns INTEGER, json TEXT)    -- latest status per key ("pipeline", "source:<uri>")
    counters(name TEXT PRIMARY KEY, value INTEGER)            -- daemon counters, survive restarts

:meth:`EventLog.append` commits before it returns, so an event a sink may see is on disk
first; after a crash (``kill -9``) the next run publishes every row past each sink's
cursor (:meth:`pending`), so a consumer sees each event at least once and de-duplicates by
``id``. Durability: ``synchronous=FULL`` (default) fsyncs the WAL on every commit, so a
committed event survives power loss too (a robot's battery can be pulled); events are a
few per second, so the fsync costs little. ``NORMAL`` survives a process crash but may lose
the last commits on power loss. The log is bounded: past ``max_events`` rows the oldest rows
every sink has published are deleted; if sinks lag further behind than ``max_events``, the
oldest unpublished rows go too (counted in ``events_pruned_unpublished``, logged).

One connection, serialised by a lock: safe from any thread (the inference thread appends,
the publisher thread reads and marks, the main thread writes status).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

_LOG = logging.getLogger("edgebind.eventlog")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, json TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sink_cursor (sink TEXT PRIMARY KEY, last_id INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS status (key TEXT PRIMARY KEY, ts_ns INTEGER NOT NULL, json TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)
PRUNE_EVERY = 64  # appends between bound checks


class EventLog:
    """The event log (see the module docstring).

    Args:
        path: the SQLite file (created with its directory's permissions).
        max_events: rows kept at most (>= 10).
        sinks: the enabled sinks; a sink seen for the first time starts after the newest row.
        synchronous: ``"full"`` or ``"normal"`` (see the module docstring).
    """

    def __init__(self, path: str | Path, max_events: int = 100_000, sinks: Sequence[str] = (),
                 synchronous: str = "full") -> None:  # fmt: skip
        if max_events < 10 or synchronous not in ("full", "normal"):
            raise ValueError("max_events must be >= 10 and synchronous 'full' or 'normal'")
        self.path, self.max_events, self.sinks = Path(path), max_events, tuple(sinks)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        with self._lock, self._tx():
            for sql in _SCHEMA:
                self._db.execute(sql)
            newest = self._newest()
            for sink in self.sinks:
                self._db.execute("INSERT OR IGNORE INTO sink_cursor VALUES (?, ?)", (sink, newest))
        self._appends = 0

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _newest(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    @property
    def journal_mode(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    # -- events -----------------------------------------------------------------------------
    def append(self, event: Mapping[str, Any]) -> int:
        """Commit ``event`` (a JSON-ready dict) and return its id (readers get it back with ``"id"`` set)."""
        ts_ns = time.time_ns()
        with self._lock:
            cur = self._db.execute("INSERT INTO events (ts_ns, json) VALUES (?, ?)", (ts_ns, _dump(event)))
            row_id = int(cur.lastrowid or 0)
            self._appends += 1
            if self._appends % PRUNE_EVERY == 0:
                self._prune()
        return row_id

    def pending(self, sink: str, limit: int = 256) -> Iterator[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` rows after ``sink``'s cursor, oldest first, as (id, event)."""
        with self._lock:
            last = self._cursor(sink)
            rows = self._db.execute("SELECT id, json FROM events WHERE id > ? ORDER BY id LIMIT ?",
                                    (last, limit)).fetchall()  # fmt: skip
        for row_id, text in rows:
            yield int(row_id), {**json.loads(text), "id": int(row_id)}

    def mark_published(self, sink: str, event_id: int) -> None:
        """Move ``sink``'s cursor forward to ``event_id`` (never backwards)."""
        with self._lock, self._tx():
            self._db.execute(
                "INSERT INTO sink_cursor VALUES (?, ?) ON CONFLICT(sink) DO UPDATE SET "
                "last_id = MAX(last_id, excluded.last_id)",
                (sink, int(event_id)),
            )

    def cursor(self, sink: str) -> int:
        """The last id ``sink`` delivered (0: none)."""
        with self._lock:
            return self._cursor(sink)

    def _cursor(self, sink: str) -> int:
        row = self._db.execute("SELECT last_id FROM sink_cursor WHERE sink = ?", (sink,)).fetchone()
        return int(row[0]) if row else 0

    def unpublished(self) -> dict[str, int]:
        """Rows not yet delivered, per enabled sink."""
        with self._lock:
            newest = self._newest()
            return {s: max(0, newest - self._cursor(s)) for s in self.sinks}

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def events(self, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored events with id > ``after``, oldest first (for tools and tests)."""
        with self._lock:
            rows = self._db.execute("SELECT id, json FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
            return [{**json.loads(text), "id": int(i)} for i, text in rows.fetchall()]

    def prune(self) -> int:
        """Apply the bound now; returns the rows deleted."""
        with self._lock:
            return self._prune()

    def _prune(self) -> int:
        n = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        excess = n - self.max_events
        if excess <= 0:
            return 0
        cursors = [self._cursor(s) for s in self.sinks]
        safe = min(cursors) if cursors else self._newest()
        with self._tx():
            cut = self._db.execute("SELECT id FROM events ORDER BY id LIMIT 1 OFFSET ?", (excess - 1,)).fetchone()[0]
            gone = self._db.execute("DELETE FROM events WHERE id <= ?", (cut,)).rowcount
            if cut > safe:
                lost = int(cut - safe)
                self._bump("events_pruned_unpublished", lost)
                _LOG.warning("event log full (%d rows): dropped up to %d unpublished events; sinks are behind",
                             self.max_events, lost)  # fmt: skip
        return int(gone)

    # -- status and counters ----------------------------------------------------------------
    def put_status(self, key: str, status: Mapping[str, Any]) -> None:
        """Replace the latest status stored under ``key``."""
        with self._lock, self._tx():
            self._db.execute("INSERT OR REPLACE INTO status VALUES (?, ?, ?)", (key, time.time_ns(), _dump(status)))

    def status(self) -> dict[str, dict[str, Any]]:
        """Every stored status by key."""
        with self._lock:
            rows = self._db.execute("SELECT key, json FROM status ORDER BY key").fetchall()
        return {key: json.loads(text) for key, text in rows}

    def set_counters(self, values: Mapping[str, int]) -> None:
        """Store counters (absolute values)."""
        with self._lock, self._tx():
            self._db.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?)",
                                 [(k, int(v)) for k, v in values.items()])  # fmt: skip

    def _bump(self, name: str, n: int) -> None:
        self._db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                         (name, n, n))  # fmt: skip

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {k: int(v) for k, v in self._db.execute("SELECT name, value FROM counters").fetchall()}

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # e.g. a reader holds the WAL: it is replayed on the next open
                _LOG.warning("event log checkpoint failed: %s", exc)
            self._db.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection; nestable."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._outer = False

    def __enter__(self) -> None:
        self._outer = not self._db.in_transaction
        if self._outer:
            self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self._outer:
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _dump(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)
