"""A bounded on-device embedding memory: every window's unit embedding with its time and source.

A memory directory holds ``memory.sqlite`` (SQLite WAL: settings, streams, one row per window
with its wall-clock and monotonic times) and ``vectors.bin`` (a memory-mapped (capacity, D)
float32 or float16 ring of unit vectors); :mod:`runtime.memory_store` opens and checks it.

Window ``id`` n lives in slot ``(n - 1) % capacity``: the ring reuses a slot when size
retention evicts its row (the row ``capacity`` ids older is deleted), and age retention
(``max_age_s``) deletes rows whose window ended too long ago, freeing their slots until
the ring comes round to them. SQLite is the source of truth: a slot only counts while a
row names it, the vector is written (and the map flushed) before its row commits, and on
reopen the slot table is rebuilt from the rows, so a crash loses at most the uncommitted
tail (rows are committed in batches of ``commit_every`` or every ``commit_interval_s``).

Search is exact brute-force cosine over the live slots (:mod:`runtime.memory_scan`): the
in-RAM slot table (:mod:`runtime.memory_slots`: id, wall start/end, modality, and per time
partition the span of its windows) selects the slots, then the vectors are scored in chunks
(one BLAS matrix-vector product each) keeping a running top-k. Why no ANN index: the demo
bundle's four streams make audio 1/s (2 s window, 1 s hop), IMU 1/s (5 s, 1 s hop), depth
10/s and thermal 9/s (one frame each) = 21 windows/s = 75,600 an hour, 1.81 M a day, 12.7 M
a week, and on the shared 2-core dev VM an exact top-10 over a day of D=64 float32 vectors
(464 MB) takes ~20 ms and over a week (3.25 GB) ~150 ms (~20 GB/s, benchmarks/memory_search.py,
benchmarks/results/memory-search-cpu-xeon-2core-2026-11-28.md). A scan is bounded by memory
bandwidth, and by CPU neighbours: with another process busy on one core, OpenBLAS's
two-thread product waits for that core (a week: 340 ms, p99 560 ms); one BLAS thread
(``OPENBLAS_NUM_THREADS=1``) keeps it at ~270 ms. The default dtype is float32 because
numpy's float16 -> float32 conversion runs several times slower than the product on x86 (a
week as float16: ~1 s); float16 halves the footprint and suits ARM (Jetson), where the
conversion is a NEON instruction. The limits are bytes per query and RAM (the ring should
stay in the page cache): at D=1024 a day is 7.4 GB and a week 52 GB (float32). An ANN index
(IVF/HNSW, e.g. faiss or hnswlib) or a smaller D pays off there, or when many queries per
second arrive. Filters cut the work: time partitions that cannot overlap ``since``/``until``
are never visited (the last hour takes ~1-2 ms at any store size), chunks with no selected
slot are skipped and a sparse selection (one modality) scores only its rows. The exact scan
stays the reference to measure ANN recall.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.memory_scan import Scanner
from runtime.memory_slots import MODS, SlotTable, modality_codes
from runtime.memory_store import DB_FILE, VEC_FILE, MemoryStoreError, Tx, load_index, open_store
from runtime.types import Modality

__all__ = ["DB_FILE", "VEC_FILE", "EmbeddingMemory", "Hit", "MemoryStoreError", "WindowRecorder"]


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
        store = open_store(self.dir, dim, max_windows, dtype, meta)
        self._db, self._vec = store.db, store.vectors
        self.dim, self.capacity, self.dtype = store.dim, store.capacity, store.dtype
        self._slots = SlotTable(self.capacity)
        self._scanner = Scanner()
        self._sids, self._next_id = load_index(self._db, self._slots, self.dir)

    # -- open / close ---------------------------------------------------------------------
    def close(self) -> None:
        """Commit pending rows and close (idempotent)."""
        with self._lock:
            if self._db is None:
                return
            self.flush()
            self._vec.flush()
            self._db.close()
            self._db = None  # type: ignore[assignment]

    def _check_open(self) -> None:
        if self._db is None:
            raise MemoryStoreError(f"memory {self.dir} is closed; reopen it to store or search")

    def __enter__(self) -> EmbeddingMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def meta(self) -> dict[str, str]:
        """The stored metadata (dim, capacity, dtype, version and whatever the recorder added)."""
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, meta: Mapping[str, str]) -> None:
        """Record (insert or replace) metadata entries, e.g. model_id and bundle."""
        with self._lock, Tx(self._db):
            for k, v in meta.items():
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (str(k), str(v)))

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
        if not np.all(np.isfinite(vec)):
            raise ValueError("vector has NaN or infinite values; not stored")
        vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        if wall_start_ns is None:
            wall_start_ns = start_ns + self._clock() - time.monotonic_ns()
        wall_end_ns = wall_start_ns + (end_ns - start_ns)
        with self._lock:
            self._check_open()
            wid = self._next_id
            self._next_id += 1
            slot = (wid - 1) % self.capacity
            self._vec[slot] = vec
            self._slots.put(slot, wid, wall_start_ns, wall_end_ns, MODS.index(mod))
            self._pending.append((wid, self._sid(stream, source, mod), wall_start_ns, wall_end_ns, start_ns, end_ns))
            due = time.monotonic() - self._last_commit >= self.commit_interval_s
            if due or len(self._pending) >= self.commit_every:
                self.flush()
            return wid

    def append_many(self, stream: str, modality: Modality | str, wall_start_ns: NDArray, wall_end_ns: NDArray,
                    vectors: NDArray, *, source: str = "") -> None:  # fmt: skip
        """Bulk append (benchmarks, imports): N windows of one stream with wall-clock times, committed at once.

        ``vectors`` is (N, D) (normalised here); the monotonic times stored are the wall-clock ones.
        """
        vecs = np.asarray(vectors, np.float32)
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        mod = Modality(modality)
        starts, ends = np.asarray(wall_start_ns, np.int64), np.asarray(wall_end_ns, np.int64)
        with self._lock:
            self._check_open()
            self.flush()
            n = len(vecs)
            ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
            self._next_id += n
            keep = slice(max(0, n - self.capacity), n)  # older ones would be overwritten in this same call
            slots = (ids[keep] - 1) % self.capacity
            self._vec[slots] = vecs[keep]
            self._slots.put(slots, ids[keep], starts[keep], ends[keep], MODS.index(mod))
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
            if self._pending:
                self._vec.flush()  # vectors on disk before the rows that name them
            newest = self._next_id - 1
            with Tx(self._db):
                if self._pending:
                    self._db.executemany("INSERT INTO windows VALUES (?, ?, ?, ?, ?, ?)", self._pending)
                    self._pending = []
                    n = self._db.execute("DELETE FROM windows WHERE id <= ?", (newest - self.capacity,)).rowcount
                    self.evicted_size += max(n, 0)
                if self.max_age_s is not None:
                    ids = self._slots.expire(self._clock() - int(self.max_age_s * 1e9))
                    if ids.size:  # delete by runs of consecutive ids (no index on end_ns needed)
                        cut = np.flatnonzero(np.diff(ids) != 1) + 1
                        runs = [(int(r[0]), int(r[-1])) for r in np.split(ids, cut)]
                        self._db.executemany("DELETE FROM windows WHERE id BETWEEN ? AND ?", runs)
                        self.evicted_age += int(ids.size)
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
        The lock is released between scan chunks, so appends from the inference thread wait
        for one chunk (~1-3 ms), not the whole scan; a hit on a slot that the ring rewrote
        during the scan (the oldest windows, evicted meanwhile) is dropped, so a search that
        races the ring's wrap-around may return fewer than ``top_k`` hits.
        """
        q = np.asarray(query, np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise ValueError(f"query has {q.shape[0]} values, the memory stores D={self.dim}")
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        codes = modality_codes(modality)
        if top_k <= 0:
            return []
        with self._lock:
            self._check_open()
            self.flush()
            first_new = self._next_id  # windows from here on were written during the scan
        scores, slots = self._scanner.scan(self._vec, self._slots, q, top_k, since_ns=since_ns, until_ns=until_ns,
                                           codes=codes, min_score=min_score, lock=self._lock)  # fmt: skip
        with self._lock:
            ids = self._slots.id[slots]
            keep = (ids > 0) & (ids < first_new)
            return self._hits(slots[keep], scores[keep])

    def _hits(self, slots: NDArray, scores: NDArray) -> list[Hit]:
        ids = [int(i) for i in self._slots.id[slots]]
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
                if self._slots.id[slot] != i:
                    raise KeyError(f"window {i} is not in the memory (evicted?)")
                out.append(np.asarray(self._vec[slot], np.float32))
            return np.stack(out) if out else np.zeros((0, self.dim), np.float32)

    def __len__(self) -> int:
        with self._lock:
            return int(np.count_nonzero(self._slots.id))

    def stats(self) -> dict[str, Any]:
        """Counts, time span, footprint (bytes on disk and resident index) and eviction counters."""
        with self._lock:
            self.flush()
            t = self._slots
            live = t.live()
            by_mod = np.bincount(t.mod[live].astype(np.int64), minlength=len(MODS))
            files = [self.dir / DB_FILE, self.dir / f"{DB_FILE}-wal", self.dir / VEC_FILE]
            disk = {p.name: p.stat().st_size for p in files if p.exists()}
            vec_stat = (self.dir / VEC_FILE).stat()
            allocated = vec_stat.st_blocks * 512 if hasattr(vec_stat, "st_blocks") else disk[VEC_FILE]
            n = int(live.sum())
            return {
                "windows": n,
                "capacity": self.capacity,
                "dim": self.dim,
                "dtype": self.dtype,
                "max_age_s": self.max_age_s,
                "oldest_ns": int(t.start[live].min()) if n else None,
                "newest_ns": int(t.end[live].max()) if n else None,
                "by_modality": {m.value: int(c) for m, c in zip(MODS, by_mod, strict=True) if c},
                "evicted_size": self.evicted_size,
                "evicted_age": self.evicted_age,
                "disk_bytes": disk,
                "vector_bytes_allocated": int(allocated),
                "index_bytes": t.nbytes,
            }


class WindowRecorder:
    """A :class:`runtime.pipeline.Pipeline` ``on_window`` hook storing every window in a memory.

    Set ``sources`` (stream key -> source name) from ``pipeline.streams`` once the pipeline exists.
    ``stored`` counts the windows stored, ``failed`` those lost (disk full, a closed store): the
    error is re-raised for the pipeline to report, and matching goes on.
    """

    def __init__(self, memory: EmbeddingMemory) -> None:
        self.memory = memory
        self.sources: dict[str, str] = {}
        self.stored = 0
        self.failed = 0

    def __call__(self, key: str, modality: Modality, start_ns: int, end_ns: int, vector: NDArray) -> None:
        try:
            self.memory.append(key, modality, start_ns, end_ns, vector, source=self.sources.get(key, ""))
        except Exception:
            self.failed += 1
            raise
        self.stored += 1
