"""Opening an embedding-memory directory: the SQLite schema, the stored settings and the vector file, checked.

Layout of a memory directory::

    memory.sqlite    SQLite (WAL): meta(key, value) -- dim, capacity, dtype, version, model_id, bundle
                     streams(id INTEGER PRIMARY KEY, stream, source, modality)   -- one row per stream
                     windows(id INTEGER PRIMARY KEY AUTOINCREMENT, sid -> streams.id,
                             start_ns, end_ns (wall clock, time.time_ns), start_mono_ns, end_mono_ns)
    vectors.bin      raw memory-mapped (capacity, dim) float32 (or float16) ring of unit vectors

Every way a directory can be unusable (not SQLite, settings that differ from the asked ones,
a vector file of the wrong size or missing while rows name it, rows naming unknown streams)
raises :class:`MemoryStoreError` with a one-line message saying what to do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import EdgebindError
from runtime.memory_slots import MODS, SlotTable
from runtime.types import Modality

DB_FILE = "memory.sqlite"
VEC_FILE = "vectors.bin"
DTYPES = ("float16", "float32")
DEFAULT_CAPACITY = 1_000_000
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS streams (id INTEGER PRIMARY KEY, stream TEXT NOT NULL, source TEXT NOT NULL,"
    " modality TEXT NOT NULL, UNIQUE (stream, source, modality))",
    "CREATE TABLE IF NOT EXISTS windows (id INTEGER PRIMARY KEY AUTOINCREMENT, sid INTEGER NOT NULL,"
    " start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, start_mono_ns INTEGER NOT NULL,"
    " end_mono_ns INTEGER NOT NULL)",
)


class MemoryStoreError(EdgebindError):
    """The memory directory cannot be used (corrupt, mismatched); the message says what to do."""


@dataclass(frozen=True)
class OpenStore:
    """An opened, checked memory directory: the connection, the vector ring and its settings."""

    db: sqlite3.Connection
    vectors: np.memmap  # (capacity, dim) of dtype, mode r+
    dim: int
    capacity: int
    dtype: str  # "float32" | "float16"


def open_store(directory: Path, dim: int | None, max_windows: int | None, dtype: str | None,
               meta: Mapping[str, str] | None) -> OpenStore:  # fmt: skip
    """Open (or create, when ``dim`` is given) the store in ``directory`` and check it (see the module doc)."""
    db_path, vec_path = directory / DB_FILE, directory / VEC_FILE
    if not db_path.exists() and dim is None:
        raise MemoryStoreError(f"{directory} holds no embedding memory ({DB_FILE} missing); record one first")
    directory.mkdir(parents=True, exist_ok=True)
    fix = f"move {directory} away or delete it to start a new memory"
    try:
        db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None, timeout=10.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for sql in _SCHEMA:
            db.execute(sql)
        stored = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        raise MemoryStoreError(f"{db_path} is not a usable memory store ({exc}); {fix}") from None
    dim, capacity, dtype = _settings(db, directory, stored, (dim, max_windows, dtype), fix)
    if meta:
        with Tx(db):
            for k, v in meta.items():
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (str(k), str(v)))
    expect = capacity * dim * np.dtype(dtype).itemsize
    if not vec_path.exists():
        if stored and db.execute("SELECT COUNT(*) FROM windows").fetchone()[0]:
            raise MemoryStoreError(f"{vec_path} is missing but {DB_FILE} lists windows; {fix}")
        with open(vec_path, "wb") as f:
            f.truncate(expect)  # sparse: pages appear as the ring fills
    size = vec_path.stat().st_size
    if size != expect:
        raise MemoryStoreError(f"{vec_path} has {size} bytes, expected {expect} ({capacity} x {dim} {dtype}): "
                               f"truncated or from another store; {fix}")  # fmt: skip
    vectors = np.memmap(vec_path, dtype=dtype, mode="r+", shape=(capacity, dim))
    return OpenStore(db, vectors, dim, capacity, dtype)


def _settings(db: sqlite3.Connection, directory: Path, stored: dict[str, str],
              asked: tuple[int | None, int | None, str | None], fix: str) -> tuple[int, int, str]:  # fmt: skip
    """Check the asked (dim, max_windows, dtype) against a stored store, or record them for a new one."""
    dim, max_windows, dtype = asked
    if stored:
        s_dim, s_cap, s_dtype = int(stored["dim"]), int(stored["capacity"]), stored["dtype"]
        if dim is not None and dim != s_dim:
            raise MemoryStoreError(f"memory {directory} holds D={s_dim} vectors but D={dim} was asked "
                                   f"(another bundle?); use another memory directory or {fix}")  # fmt: skip
        if max_windows is not None and max_windows != s_cap:
            raise MemoryStoreError(f"memory {directory} has capacity {s_cap} windows, not {max_windows}; "
                                   f"keep {s_cap} or {fix}")  # fmt: skip
        if dtype is not None and dtype != s_dtype:
            raise MemoryStoreError(f"memory {directory} stores {s_dtype}, not {dtype}; {fix}")
        return s_dim, s_cap, s_dtype
    if (directory / VEC_FILE).exists():
        raise MemoryStoreError(f"{directory} has {VEC_FILE} but no metadata in {DB_FILE}; {fix}")
    dtype = dtype or "float32"
    max_windows = DEFAULT_CAPACITY if max_windows is None else max_windows
    assert dim is not None
    if dim < 1 or max_windows < 1 or dtype not in DTYPES:
        raise ValueError(f"need dim >= 1, max_windows >= 1 and dtype in {DTYPES}")
    with Tx(db):
        for k, v in {"dim": dim, "capacity": max_windows, "dtype": dtype, "version": 1}.items():
            db.execute("INSERT INTO meta VALUES (?, ?)", (k, str(v)))
    return int(dim), int(max_windows), str(dtype)


StreamIds = dict[tuple[str, str, str], int]  # (stream, source, modality) -> streams.id


def load_index(db: sqlite3.Connection, table: SlotTable, directory: Path) -> tuple[StreamIds, int]:
    """Rebuild ``table`` from the window rows of ``directory``'s store; returns (stream key -> stream id, next id).

    Raises:
        MemoryStoreError: a row names an unknown stream or modality, or SQLite cannot read the rows.
    """
    try:
        return _load(db, table)
    except (sqlite3.DatabaseError, ValueError, KeyError, IndexError) as exc:
        raise MemoryStoreError(f"{directory / DB_FILE}: bad window rows ({exc}); move {directory} away or delete "
                               f"it to start a new memory") from None  # fmt: skip


def _load(db: sqlite3.Connection, table: SlotTable) -> tuple[StreamIds, int]:
    sids: StreamIds = {}
    rows = db.execute("SELECT id, stream, source, modality FROM streams").fetchall()
    sid_mod = np.full(max((r[0] for r in rows), default=0) + 1, -1, np.int8)
    for sid, stream, source, mod in rows:
        sids[(stream, source, mod)] = sid
        sid_mod[sid] = MODS.index(Modality(mod))
    cur = db.execute("SELECT id, sid, start_ns, end_ns FROM windows")
    while chunk := cur.fetchmany(200_000):
        a = np.array(chunk, dtype=np.int64)
        if np.any(a[:, 1] >= sid_mod.size) or np.any(sid_mod[a[:, 1]] < 0):
            raise ValueError("a window names an unknown stream")
        table.put((a[:, 0] - 1) % table.capacity, a[:, 0], a[:, 2], a[:, 3], sid_mod[a[:, 1]])
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'windows'").fetchone()
    return sids, max(int(row[0]) if row else 0, int(table.id.max(initial=0))) + 1


class Tx:
    """``with Tx(db):`` one immediate transaction, committed on success, rolled back on an exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
