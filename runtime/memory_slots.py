"""The in-RAM index of an embedding memory's vector ring: per slot the window id, wall times and modality.

The ring has ``capacity`` slots; window id n lives in slot ``(n - 1) % capacity`` and a slot
is live while its id is > 0. Filters (time range, modality) are evaluated on these arrays,
never on SQLite, so a search touches the database only for its top-k rows.

Time partitions: the slots are grouped into partitions of :data:`PART_ROWS` consecutive
slots, each with the smallest wall start and the largest wall end of its live windows. A
time-filtered search (``since`` = the last hour) or age retention visits only the partitions
whose bounds overlap, so its cost follows the selected time span, not the store size (the
ring is filled in time order, so a time span maps to a few consecutive partitions). Bounds
are exact: a write or a free marks its partition dirty and the bounds are recomputed on
the next read.

Memory: 8 + 8 + 8 + 1 = 25 bytes a slot (305 MB for a week of four streams, 12.7 M slots).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.types import Modality

MODS = list(Modality)  # modality codes: the index in this list (int8); -1 for a free slot
PART_ROWS = 1 << 14  # slots per time partition
_I64 = np.iinfo(np.int64)


def modality_codes(modality: Modality | str | Iterable[Modality | str] | None) -> NDArray[np.int8] | None:
    """The int8 codes of a modality filter (one or several names); None for no filter."""
    if modality is None:
        return None
    mods = [modality] if isinstance(modality, (str, Modality)) else list(modality)
    return np.array([MODS.index(Modality(m)) for m in mods], np.int8)


class SlotTable:
    """Per-slot arrays of a ring of ``capacity`` slots, plus the time bounds of each partition.

    Attributes:
        id: (capacity,) int64 window id, 0 for a free slot.
        start, end: (capacity,) int64 wall-clock ns (time.time_ns) of the window.
        mod: (capacity,) int8 index into :data:`MODS`, -1 for a free slot.
    """

    def __init__(self, capacity: int, part_rows: int | None = None) -> None:
        self.capacity = int(capacity)
        self.part_rows = int(part_rows or PART_ROWS)
        self.id = np.zeros(self.capacity, np.int64)
        self.start = np.zeros(self.capacity, np.int64)
        self.end = np.zeros(self.capacity, np.int64)
        self.mod = np.full(self.capacity, -1, np.int8)
        parts = -(-self.capacity // self.part_rows)
        self._lo = np.full(parts, _I64.max, np.int64)  # smallest live start in the partition
        self._hi = np.full(parts, _I64.min, np.int64)  # largest live end (min int64: empty)
        self._dirty = np.zeros(parts, bool)

    @property
    def nbytes(self) -> int:
        """Bytes of RAM held by the per-slot arrays."""
        return int(self.id.nbytes + self.start.nbytes + self.end.nbytes + self.mod.nbytes)

    def put(self, slots: NDArray[np.int64] | int, ids: Any, starts: Any, ends: Any, mod: Any) -> None:
        """Make ``slots`` live with these ids, wall times and modality codes (arrays or scalars)."""
        self.id[slots], self.start[slots], self.end[slots], self.mod[slots] = ids, starts, ends, mod
        self._touch(slots)

    def live(self) -> NDArray[np.bool_]:
        """(capacity,) bool: the slots that hold a window."""
        return self.id > 0

    def expire(self, cutoff_ns: int) -> NDArray[np.int64]:
        """Free the live slots whose window ended before ``cutoff_ns``; returns their ids (ascending)."""
        found = []
        for a, b in self.ranges(hi_below=cutoff_ns):
            old = np.flatnonzero((self.id[a:b] > 0) & (self.end[a:b] < cutoff_ns)) + a
            if old.size:
                found.append(old)
        if not found:
            return np.zeros(0, np.int64)
        slots = np.concatenate(found)
        ids = np.sort(self.id[slots])
        self.id[slots], self.mod[slots] = 0, -1
        self._touch(slots)
        return ids

    def ranges(self, since_ns: int | None = None, until_ns: int | None = None, *,
               hi_below: int | None = None) -> list[tuple[int, int]]:  # fmt: skip
        """Slot ranges [a, b) of the partitions that may hold a live window overlapping [since_ns, until_ns].

        With ``hi_below``: the partitions whose oldest window *starts* before it (candidates for age
        retention: only there can a window end before ``hi_below``). Adjacent partitions are merged.
        """
        self._refresh()
        keep = self._hi > _I64.min  # not empty
        if since_ns is not None:
            keep &= self._hi >= since_ns
        if until_ns is not None:
            keep &= self._lo <= until_ns
        if hi_below is not None:
            keep &= self._lo < hi_below
        parts = np.flatnonzero(keep)
        if parts.size == 0:
            return []
        cut = np.flatnonzero(np.diff(parts) != 1) + 1
        return [(int(r[0]) * self.part_rows, min(self.capacity, (int(r[-1]) + 1) * self.part_rows))
                for r in np.split(parts, cut)]  # fmt: skip

    def mask(self, a: int, b: int, since_ns: int | None, until_ns: int | None,
             codes: NDArray[np.int8] | None) -> NDArray[np.bool_]:  # fmt: skip
        """(b - a,) bool: the live slots of [a, b) overlapping [since_ns, until_ns] with a modality in ``codes``."""
        m = self.id[a:b] > 0
        if since_ns is not None:
            m &= self.end[a:b] >= since_ns
        if until_ns is not None:
            m &= self.start[a:b] <= until_ns
        if codes is not None:  # one == per code: ~3x faster than np.isin on int8
            mod = self.mod[a:b]
            sel = mod == codes[0] if codes.size else np.zeros(b - a, bool)
            for c in codes[1:]:
                sel |= mod == c
            m &= sel
        return m

    def _touch(self, slots: NDArray[np.int64] | int) -> None:
        self._dirty[np.asarray(slots, np.int64) // self.part_rows] = True

    def _refresh(self) -> None:
        for p in np.flatnonzero(self._dirty).tolist():
            a, b = p * self.part_rows, min(self.capacity, (p + 1) * self.part_rows)
            live = self.id[a:b] > 0
            self._lo[p] = self.start[a:b][live].min(initial=_I64.max)
            self._hi[p] = self.end[a:b][live].max(initial=_I64.min)
        self._dirty[:] = False
