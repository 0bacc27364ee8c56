"""A bounded on-device embedding memory: every window's unit embedding with its time and source.

Layout of a memory directory::

    memory.sqlite    SQLite (WAL): meta(key, value) -- dim, capacity, dtype, model_id, bundle
                     streams(id INTEGER PRIMARY KEY, stream, source, modality)   -- one row per stream
                     windows(id INTEGER PRIMARY KEY AUTOINCREMENT, sid -> streams.id,
                             start_ns, end_ns (wall clock, time.time_ns), start_mono_ns, end_mono_ns)
    vectors.bin      raw memory-mapped (capacity, dim) float32 (or float16) ring of unit vectors

Window ``id`` n lives in slot ``(n - 1) % capacity``: the ring reuses a slot when size
retention evicts its row (the row ``capacity`` ids older is deleted), and age retention
(``max_age_s``) deletes rows whose window ended too long ago, freeing their slots until
the ring comes round to them. SQLite is the source of truth: a slot only counts while a
row names it, the vector is written (and the map flushed) before its row commits, and on
reopen the slot table is rebuilt from the rows, so a crash loses at most the uncommitted
tail (rows are committed in batches of ``commit_every`` or every ``commit_interval_s``).

Search is exact brute-force cosine over the live slots: a per-slot numpy table (id, wall
start/end, modality) is filtered vectorised, then the vectors are scored in chunks of
``CHUNK_ROWS`` rows / ``CHUNK_BYTES`` of scratch (one BLAS matrix-vector product each) keeping a
running top-k. Why no ANN index: the demo bundle's four streams make audio 1/s (2 s window, 1 s
hop), IMU 1/s (5 s, 1 s hop), depth 10/s and thermal 9/s (one frame each) = 21 windows/s
= 75,600 an hour, 1.81 M a day, 12.7 M a week. Scoring 1.81 M x 64 float32 vectors is
~116 M multiply-adds over 464 MB: 90-300 ms on the shared 2-core dev VM (measured by
benchmarks/memory_search.py, results in benchmarks/results/memory-search-*.md). The
default dtype is float32 because numpy's float16 -> float32 conversion runs ~10x slower
than the product itself on x86 (a day at D=64 took 0.5-0.8 s as float16); float16 halves
the footprint and suits ARM (Jetson), where the conversion is a NEON instruction. A scan is
bounded by memory bandwidth, so the limit is bytes per query: at D=1024 a day is 7.4 GB
(float32) and one scan takes seconds. An ANN index (IVF/HNSW, e.g. faiss or hnswlib) pays
off once a query must scan more than ~1-2 GB (a week at D=64, a few hours at D=1024), or
many queries per second arrive. Filters cut the work: chunks with no selected slot are
skipped (``since`` = the last hour stays fast at any size) and a sparse selection (one
modality) scores only its rows. The exact scan stays the reference to measure ANN recall.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import EdgebindError
from runtime.types import Modality

DB_FILE = "memory.sqlite"
VEC_FILE = "vectors.bin"
CHUNK_ROWS = 1 << 16  # rows scored per step at most ...
CHUNK_BYTES = 16 << 20  # ... and at most this much float32 scratch (4096 rows at D=1024)
_MODS = list(Modality)
_DTYPES = ("float16", "float32")
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
class Hit:
    """One search result: a stored window and its cosine score against the query."""

    id: int
    score: float
    stream: str
    source: str
    modality: str
    start_ns: int  # wall clock (time.time_ns)
    end_ns: int
    start_mono_ns: int
    end_mono_ns: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EmbeddingMemory:
    """The store (see the module docstring). Thread-safe: one lock around every operation.

    Args:
        directory: created if missing.
        dim: vector size; None to take it from an existing store.
        max_windows: ring capacity (windows kept at most); None: the stored one, or 1,000,000 for a new store.
        max_age_s: windows whose end is older are evicted (None: age unlimited).
        dtype: "float32" (default, fastest exact scan) or "float16" (half the footprint); fixed at creation.
        meta: extra metadata to record in a new or reopened store (e.g. model_id, bundle).
        commit_every / commit_interval_s: batch commits of appended rows.
        clock_ns: wall clock (tests pass a fake one).

    Raises:
        MemoryStoreError: the store is corrupt or does not match ``dim`` / ``max_windows`` / ``dtype``.
    """

    def __init__(
        self,
        directory: str | Path,
        dim: int | None = None,
        max_windows: int | None = None,
        max_age_s: float | None = None,
        *,
        dtype: str | None = None,
        meta: Mapping[str, str] | None = None,
        commit_every: int = 64,
        commit_interval_s: float = 1.0,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.dir = Path(directory)
        self.max_age_s = max_age_s
        self.commit_every, self.commit_interval_s = max(1, commit_every), commit_interval_s
        self._clock = clock_ns
        self._lock = threading.RLock()
        self._pending: list[tuple] = []
        self._last_commit = time.monotonic()
        self.evicted_size = self.evicted_age = 0
        db_path, vec_path = self.dir / DB_FILE, self.dir / VEC_FILE
        if not db_path.exists() and dim is None:
            raise MemoryStoreError(f"{self.dir} holds no embedding memory ({DB_FILE} missing); record one first")
        self.dir.mkdir(parents=True, exist_ok=True)
        fix = f"move {self.dir} away or delete it to start a new memory"
        try:
            self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for sql in _SCHEMA:
                self._db.execute(sql)
            stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise MemoryStoreError(f"{db_path} is not a usable memory store ({exc}); {fix}") from None
        dim, max_windows, dtype = self._settings(stored, (dim, max_windows, dtype), vec_path, fix)
        if meta:
            with _Tx(self._db):
                for k, v in meta.items():
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (str(k), str(v)))
        self.dim, self.capacity, self.dtype = int(dim), int(max_windows), str(dtype)
        expect = self.capacity * self.dim * np.dtype(self.dtype).itemsize
        if not vec_path.exists():
            if stored and self._db.execute("SELECT COUNT(*) FROM windows").fetchone()[0]:
                raise MemoryStoreError(f"{vec_path} is missing but {DB_FILE} lists windows; {fix}")
            with open(vec_path, "wb") as f:
                f.truncate(expect)  # sparse: pages appear as the ring fills
        size = vec_path.stat().st_size
        if size != expect:
            raise MemoryStoreError(f"{vec_path} has {size} bytes, expected {expect} ({self.capacity} x {self.dim} "
                                   f"{self.dtype}): truncated or from another store; {fix}")  # fmt: skip
        self._vec = np.memmap(vec_path, dtype=self.dtype, mode="r+", shape=(self.capacity, self.dim))
        self._slot_id = np.zeros(self.capacity, np.int64)  # 0: free
        self._slot_start = np.zeros(self.capacity, np.int64)
        self._slot_end = np.zeros(self.capacity, np.int64)
        self._slot_mod = np.full(self.capacity, -1, np.int8)
        try:
            self._load()
        except (sqlite3.DatabaseError, ValueError, KeyError, IndexError) as exc:
            raise MemoryStoreError(f"{db_path}: bad window rows ({exc}); {fix}") from None

    def _settings(self, stored: dict[str, str], asked: tuple[int | None, int | None, str | None], vec_path: Path,
                  fix: str) -> tuple[int, int, str]:  # fmt: skip
        """Check the asked (dim, max_windows, dtype) against a stored store, or record them for a new one."""
        dim, max_windows, dtype = asked
        if stored:
            s_dim, s_cap, s_dtype = int(stored["dim"]), int(stored["capacity"]), stored["dtype"]
            if dim is not None and dim != s_dim:
                raise MemoryStoreError(f"memory {self.dir} holds D={s_dim} vectors but D={dim} was asked "
                                       f"(another bundle?); use another memory directory or {fix}")  # fmt: skip
            if max_windows is not None and max_windows != s_cap:
                raise MemoryStoreError(f"memory {self.dir} has capacity {s_cap} windows, not {max_windows}; "
                                       f"keep {s_cap} or {fix}")  # fmt: skip
            if dtype is not None and dtype != s_dtype:
                raise MemoryStoreError(f"memory {self.dir} stores {s_dtype}, not {dtype}; {fix}")
            dim, max_windows, dtype = s_dim, s_cap, s_dtype
        else:
            if vec_path.exists():
                raise MemoryStoreError(f"{self.dir} has {VEC_FILE} but no metadata in {DB_FILE}; {fix}")
            dtype = dtype or "float32"
            max_windows = 1_000_000 if max_windows is None else max_windows
            assert dim is not None
            if dim < 1 or max_windows < 1 or dtype not in _DTYPES:
                raise ValueError(f"need dim >= 1, max_windows >= 1 and dtype in {_DTYPES}")
            with _Tx(self._db):
                for k, v in {"dim": dim, "capacity": max_windows, "dtype": dtype, "version": 1}.items():
                    self._db.execute("INSERT INTO meta VALUES (?, ?)", (k, str(v)))
        return int(dim), int(max_windows), str(dtype)  # type: ignore[arg-type]

    # -- open / close ---------------------------------------------------------------------
    def _load(self) -> None:
        self._sids: dict[tuple[str, str, str], int] = {}
        sid_mod = np.full(1, -1, np.int8)
        rows = self._db.execute("SELECT id, stream, source, modality FROM streams").fetchall()
        if rows:
            sid_mod = np.full(max(r[0] for r in rows) + 1, -1, np.int8)
        for sid, stream, source, mod in rows:
            self._sids[(stream, source, mod)] = sid
            sid_mod[sid] = _MODS.index(Modality(mod))
        cur = self._db.execute("SELECT id, sid, start_ns, end_ns FROM windows")
        while chunk := cur.fetchmany(200_000):
            a = np.array(chunk, dtype=np.int64)
            if np.any(a[:, 1] >= sid_mod.size) or np.any(sid_mod[a[:, 1]] < 0):
                raise ValueError("a window names an unknown stream")
            slots = (a[:, 0] - 1) % self.capacity
            self._slot_id[slots] = a[:, 0]
            self._slot_start[slots] = a[:, 2]
            self._slot_end[slots] = a[:, 3]
            self._slot_mod[slots] = sid_mod[a[:, 1]]
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'windows'").fetchone()
        self._next_id = max(int(row[0]) if row else 0, int(self._slot_id.max(initial=0))) + 1

    def close(self) -> None:
        """Commit pending rows and close (idempotent)."""
        with self._lock:
            if self._db is None:
                return
            self.flush()
            self._vec.flush()
            self._db.close()
            self._db = None  # type: ignore[assignment]

    def __enter__(self) -> EmbeddingMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def meta(self) -> dict[str, str]:
        """The stored metadata (dim, capacity, dtype, version and whatever the recorder added)."""
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    # -- writing --------------------------------------------------------------------------
    def append(self, stream: str, modality: Modality | str, start_ns: int, end_ns: int, vector: NDArray,
               *, source: str = "", wall_start_ns: int | None = None) -> int:  # fmt: skip
        """Store one window; returns its id.

        ``start_ns``/``end_ns`` are host monotonic ns (as in :class:`runtime.types.Window`); the
        wall-clock times are derived from them at append time unless ``wall_start_ns`` is given.
        """
        mod = Modality(modality)
        vec = np.asarray(vector, np.float32).reshape(-1)
        if vec.shape[0] != self.dim:
            raise ValueError(f"vector has {vec.shape[0]} values, the memory stores D={self.dim}")
        vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        if wall_start_ns is None:
            wall_start_ns = start_ns + self._clock() - time.monotonic_ns()
        wall_end_ns = wall_start_ns + (end_ns - start_ns)
        with self._lock:
            wid = self._next_id
            self._next_id += 1
            slot = (wid - 1) % self.capacity
            self._vec[slot] = vec
            self._slot_id[slot], self._slot_start[slot], self._slot_end[slot] = wid, wall_start_ns, wall_end_ns
            self._slot_mod[slot] = _MODS.index(mod)
            self._pending.append((wid, self._sid(stream, source, mod), wall_start_ns, wall_end_ns, start_ns, end_ns))
            due = time.monotonic() - self._last_commit >= self.commit_interval_s
            if due or len(self._pending) >= self.commit_every:
                self.flush()
            return wid

    def append_many(self, stream: str, modality: Modality | str, wall_start_ns: NDArray, wall_end_ns: NDArray,
                    vectors: NDArray, *, source: str = "") -> None:  # fmt: skip
        """Bulk append (benchmarks, imports): N windows of one stream with wall-clock times."""
        vecs = np.asarray(vectors, np.float32)
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        mod = Modality(modality)
        starts, ends = np.asarray(wall_start_ns, np.int64), np.asarray(wall_end_ns, np.int64)
        with self._lock:
            self.flush()
            n = len(vecs)
            ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
            self._next_id += n
            keep = slice(max(0, n - self.capacity), n)  # older ones would be overwritten in this same call
            slots = (ids[keep] - 1) % self.capacity
            self._vec[slots] = vecs[keep]
            self._slot_id[slots], self._slot_start[slots], self._slot_end[slots] = ids[keep], starts[keep], ends[keep]
            self._slot_mod[slots] = _MODS.index(mod)
            sid = self._sid(stream, source, mod)
            rows = zip(ids[keep].tolist(), [sid] * len(slots), starts[keep].tolist(), ends[keep].tolist(),
                       starts[keep].tolist(), ends[keep].tolist(), strict=True)  # fmt: skip
            self._pending.extend(rows)
            self.flush()

    def _sid(self, stream: str, source: str, mod: Modality) -> int:
        key = (stream, source, mod.value)
        sid = self._sids.get(key)
        if sid is None:  # a new stream: its row commits at once (autocommit)
            sid = self._db.execute("INSERT INTO streams (stream, source, modality) VALUES (?, ?, ?)", key).lastrowid
            self._sids[key] = int(sid)  # type: ignore[arg-type]
        return self._sids[key]

    def flush(self) -> None:
        """Commit appended rows and apply retention (size and age)."""
        with self._lock:
            if self._db is None:
                return
            self._vec.flush()  # vectors on disk before the rows that name them
            newest = self._next_id - 1
            with _Tx(self._db):
                if self._pending:
                    self._db.executemany("INSERT INTO windows VALUES (?, ?, ?, ?, ?, ?)", self._pending)
                    self._pending = []
                    n = self._db.execute("DELETE FROM windows WHERE id <= ?", (newest - self.capacity,)).rowcount
                    self.evicted_size += max(n, 0)
                if self.max_age_s is not None:
                    cutoff = self._clock() - int(self.max_age_s * 1e9)
                    old = (self._slot_id > 0) & (self._slot_end < cutoff)
                    if old.any():  # delete by runs of consecutive ids (no index on end_ns needed)
                        ids = np.sort(self._slot_id[old])
                        cut = np.flatnonzero(np.diff(ids) != 1) + 1
                        runs = [(int(r[0]), int(r[-1])) for r in np.split(ids, cut)]
                        self._db.executemany("DELETE FROM windows WHERE id BETWEEN ? AND ?", runs)
                        self.evicted_age += int(ids.size)
                        self._slot_id[old] = 0
                        self._slot_mod[old] = -1
            self._last_commit = time.monotonic()

    # -- reading --------------------------------------------------------------------------
    def search(
        self,
        query: NDArray,
        top_k: int = 10,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        modality: Modality | str | Iterable[Modality | str] | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        """Exact top-k by cosine over the live windows overlapping [since_ns, until_ns] (wall clock ns).

        Ties are broken by the newer window first. Returns at most ``top_k`` hits, best first.
        """
        q = np.asarray(query, np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise ValueError(f"query has {q.shape[0]} values, the memory stores D={self.dim}")
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        with self._lock:
            self.flush()
            mask = self._mask(since_ns, until_ns, modality)
            if top_k <= 0:
                return []
            scores, slots = self._scan(mask, q, top_k, min_score)
            order = np.lexsort((-self._slot_id[slots], -scores))[:top_k]
            return self._hits(slots[order], scores[order])

    def _scan(self, mask: NDArray[np.bool_], q: NDArray[np.float32], top_k: int,
              min_score: float | None) -> tuple[NDArray[np.float32], NDArray[np.int64]]:  # fmt: skip
        """Candidate (scores, slots): each chunk's top-k of the masked slots (exact overall top-k among them)."""
        cand_s: list[NDArray] = [np.zeros(0, np.float32)]
        cand_i: list[NDArray] = [np.zeros(0, np.int64)]
        step = max(1, min(CHUNK_ROWS, CHUNK_BYTES // (4 * self.dim)))
        scratch = np.empty((min(step, self.capacity) if self.dtype != "float32" else 0, self.dim), np.float32)
        for a in range(0, self.capacity, step):
            m = mask[a : a + step]
            count = int(np.count_nonzero(m))
            if count == 0:
                continue
            block = self._vec[a : a + step]
            if count * 2 < m.size:  # sparse: gather the selected rows only
                idx = np.flatnonzero(m)
                scores = block[idx].astype(np.float32) @ q
            else:  # dense: score all (float16 converted into the scratch buffer), mask the rest out
                idx = None
                if block.dtype == np.float32:
                    scores = np.asarray(block) @ q
                else:
                    buf = scratch[: len(block)]
                    np.copyto(buf, block)
                    scores = buf @ q
                if count < m.size:
                    scores[~m] = -np.inf
            if min_score is not None:
                scores[scores < min_score] = -np.inf
            k = min(top_k, scores.size)
            part = np.argpartition(scores, scores.size - k)[scores.size - k :]
            part = part[np.isfinite(scores[part])]
            cand_s.append(scores[part])
            cand_i.append((part if idx is None else idx[part]) + a)
        return np.concatenate(cand_s), np.concatenate(cand_i)

    def _mask(self, since_ns: int | None, until_ns: int | None, modality: Any) -> NDArray[np.bool_]:
        mask = self._slot_id > 0
        if since_ns is not None:
            mask &= self._slot_end >= since_ns
        if until_ns is not None:
            mask &= self._slot_start <= until_ns
        if modality is not None:
            mods = [modality] if isinstance(modality, (str, Modality)) else list(modality)
            mask &= np.isin(self._slot_mod, [_MODS.index(Modality(m)) for m in mods])
        return mask

    def _hits(self, slots: NDArray, scores: NDArray) -> list[Hit]:
        ids = [int(i) for i in self._slot_id[slots]]
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(f"SELECT w.id, s.stream, s.source, s.modality, w.start_ns, w.end_ns, w.start_mono_ns, "
                                f"w.end_mono_ns FROM windows w JOIN streams s ON s.id = w.sid "
                                f"WHERE w.id IN ({marks})", ids).fetchall()  # fmt: skip
        by_id = {r[0]: r for r in rows}
        return [Hit(i, float(s), *by_id[i][1:]) for i, s in zip(ids, scores.tolist(), strict=True) if i in by_id]

    def vectors(self, ids: Iterable[int]) -> NDArray[np.float32]:
        """The stored unit vectors of live windows ``ids`` (float32, (N, D)); KeyError for an evicted id."""
        with self._lock:
            out = []
            for i in ids:
                slot = (int(i) - 1) % self.capacity
                if self._slot_id[slot] != i:
                    raise KeyError(f"window {i} is not in the memory (evicted?)")
                out.append(np.asarray(self._vec[slot], np.float32))
            return np.stack(out) if out else np.zeros((0, self.dim), np.float32)

    def __len__(self) -> int:
        with self._lock:
            return int(np.count_nonzero(self._slot_id))

    def stats(self) -> dict[str, Any]:
        """Counts, time span, footprint (bytes on disk and resident index) and eviction counters."""
        with self._lock:
            self.flush()
            live = self._slot_id > 0
            by_mod = np.bincount(self._slot_mod[live].astype(np.int64), minlength=len(_MODS))
            files = [self.dir / DB_FILE, self.dir / f"{DB_FILE}-wal", self.dir / VEC_FILE]
            disk = {p.name: p.stat().st_size for p in files if p.exists()}
            vec_file = self.dir / VEC_FILE
            allocated = vec_file.stat().st_blocks * 512 if hasattr(vec_file.stat(), "st_blocks") else disk[VEC_FILE]
            n = int(live.sum())
            return {
                "windows": n,
                "capacity": self.capacity,
                "dim": self.dim,
                "dtype": self.dtype,
                "max_age_s": self.max_age_s,
                "oldest_ns": int(self._slot_start[live].min()) if n else None,
                "newest_ns": int(self._slot_end[live].max()) if n else None,
                "by_modality": {m.value: int(c) for m, c in zip(_MODS, by_mod, strict=True) if c},
                "evicted_size": self.evicted_size,
                "evicted_age": self.evicted_age,
                "disk_bytes": disk,
                "vector_bytes_allocated": int(allocated),
                "index_bytes": int(self._slot_id.nbytes * 3 + self._slot_mod.nbytes),
            }


class WindowRecorder:
    """A :class:`runtime.pipeline.Pipeline` ``on_window`` hook storing every window in a memory.

    Set ``sources`` (stream key -> source name) from ``pipeline.streams`` once the pipeline exists.
    """

    def __init__(self, memory: EmbeddingMemory) -> None:
        self.memory = memory
        self.sources: dict[str, str] = {}
        self.stored = 0

    def __call__(self, key: str, modality: Modality, start_ns: int, end_ns: int, vector: NDArray) -> None:
        self.memory.append(key, modality, start_ns, end_ns, vector, source=self.sources.get(key, ""))
        self.stored += 1


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
