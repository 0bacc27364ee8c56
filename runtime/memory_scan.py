"""Exact top-k cosine search over the live slots of an embedding memory's vector ring.

The ring is scored chunk by chunk (at most :data:`CHUNK_ROWS` rows and :data:`CHUNK_BYTES`
of float32 scratch, one BLAS matrix-vector product each) over the slot ranges whose time
partitions overlap the query's time filter (:meth:`runtime.memory_slots.SlotTable.ranges`),
so ``since`` = the last hour scores about an hour of windows at any store size. A chunk with
no selected slot is skipped, a sparse one (one modality) scores only its selected rows.
A running top-k keeps the candidates: a chunk only contributes the scores at or above the
current k-th best, so after the first chunks the per-chunk cost is the product and one
comparison. The result is the exact top-k, ties broken by the newer window (larger id)
first. Cost model and why there is no ANN index: see :mod:`runtime.memory`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.memory_slots import SlotTable

CHUNK_ROWS = 1 << 16  # rows scored per step at most ...
CHUNK_BYTES = 16 << 20  # ... and at most this much float32 scratch (4096 rows at D=1024)


class Scanner:
    """Runs :func:`scan`, keeping the float32 conversion buffer of a float16 ring between searches.

    The buffer (at most :data:`CHUNK_BYTES`) is allocated on the first float16 search and reused,
    so later searches pay no page faults for it. Not thread-safe: the memory's lock guards it.
    """

    def __init__(self) -> None:
        self._scratch = np.zeros((0, 0), np.float32)

    def scan(
        self,
        vectors: NDArray,
        table: SlotTable,
        q: NDArray[np.float32],
        top_k: int,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        codes: NDArray[np.int8] | None = None,
        min_score: float | None = None,
        lock: contextlib.AbstractContextManager[Any] | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The exact top-k (scores, slots), best first, of the selected live slots.

        Args:
            vectors: (capacity, D) float32 or float16 unit vectors (the memory-mapped ring).
            table: the ring's slot index (liveness, wall times in ns, modality codes).
            q: (D,) float32 unit query.
            top_k: hits wanted (>= 1).
            since_ns / until_ns: keep windows with end >= since_ns and start <= until_ns (wall ns).
            codes: modality codes to keep (:func:`runtime.memory_slots.modality_codes`); None: all.
            min_score: drop scores below it.
            lock: held while the ranges are found and around each chunk (mask, product, merge),
                released in between, so a writer (the pipeline's inference thread appending
                windows) waits for one chunk at most, not the whole scan. Slots written between
                two chunks may be scored old or new; the caller drops hits on slots rewritten
                during the scan (:meth:`runtime.memory.EmbeddingMemory.search`).

        Returns:
            scores (n,) float32 and slots (n,) int64 with n <= top_k.
        """
        dim = vectors.shape[1]
        step = max(1, min(CHUNK_ROWS, CHUNK_BYTES // (4 * dim)))
        scratch = self._buffer(min(step, table.capacity), dim) if vectors.dtype != np.float32 else self._scratch
        best = _TopK(top_k, min_score, table.id)
        guard = lock if lock is not None else contextlib.nullcontext()
        with guard:
            ranges = table.ranges(since_ns, until_ns)
        for a0, b0 in ranges:
            for a in range(a0, b0, step):
                b = min(b0, a + step)
                with guard:  # one chunk: mask, score, merge
                    m = table.mask(a, b, since_ns, until_ns, codes)
                    count = int(np.count_nonzero(m))
                    if count == 0:
                        continue
                    if count * 2 < m.size:  # sparse: gather the selected rows only
                        idx = np.flatnonzero(m)
                        scores = np.asarray(vectors[a:b][idx], np.float32) @ q
                    else:  # dense: score all (float16 converted into the scratch buffer), mask the rest out
                        idx = None
                        scores = _dense_scores(vectors[a:b], q, scratch)
                        if count < m.size:
                            scores[~m] = -np.inf
                    best.add(scores, idx, a)
        return best.scores, best.slots


    def _buffer(self, rows: int, dim: int) -> NDArray[np.float32]:
        if self._scratch.shape[0] < rows or self._scratch.shape[1] != dim:
            self._scratch = np.empty((rows, dim), np.float32)
        return self._scratch


def scan(vectors: NDArray, table: SlotTable, q: NDArray[np.float32], top_k: int,
         **filters: Any) -> tuple[NDArray[np.float32], NDArray[np.int64]]:  # fmt: skip
    """:meth:`Scanner.scan` with a fresh buffer (one-off searches, tests)."""
    return Scanner().scan(vectors, table, q, top_k, **filters)


def _dense_scores(block: NDArray, q: NDArray[np.float32], scratch: NDArray[np.float32]) -> NDArray[np.float32]:
    if block.dtype == np.float32:
        return np.asarray(block) @ q
    buf = scratch[: len(block)]
    np.copyto(buf, block)
    return buf @ q


class _TopK:
    """The running exact top-k: scores best first, ties by the larger window id (newer) first."""

    def __init__(self, k: int, min_score: float | None, ids: NDArray[np.int64]) -> None:
        self.k = k
        self.floor = -np.inf if min_score is None else float(min_score)
        self.ids = ids  # slot -> window id
        self.scores = np.zeros(0, np.float32)
        self.slots = np.zeros(0, np.int64)

    def add(self, scores: NDArray[np.float32], idx: NDArray[np.int64] | None, offset: int) -> None:
        """Merge one chunk: ``scores[j]`` belongs to slot ``offset + (j if idx is None else idx[j])``."""
        t = self.floor if self.scores.size < self.k else max(self.floor, float(self.scores[-1]))
        sel = np.flatnonzero(scores >= t)  # ties with the k-th stay: the id decides them
        if t == -np.inf:
            sel = sel[np.isfinite(scores[sel])]  # masked-out rows score -inf
        if sel.size > self.k:  # keep the k best and everything tied with the k-th
            kth = np.partition(scores[sel], sel.size - self.k)[sel.size - self.k]
            sel = sel[scores[sel] >= kth]
        if sel.size == 0:
            return
        s = np.concatenate([self.scores, scores[sel]])
        slots = np.concatenate([self.slots, (sel if idx is None else idx[sel]) + offset])
        order = np.lexsort((-self.ids[slots], -s))[: self.k]
        self.scores, self.slots = s[order], slots[order]
