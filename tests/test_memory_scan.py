"""The memory's slot table (time partitions, age expiry) and the exact top-k scan (ties, thresholds, pruning)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime import memory_scan, memory_slots
from runtime.memory import EmbeddingMemory
from runtime.memory_scan import scan
from runtime.memory_slots import SlotTable, modality_codes

S = 1_000_000_000
T0 = 1_800_000_000 * S
CODES = modality_codes(["audio", "imu", "depth", "thermal"])  # window i has CODES[(i - 1) % 4]


def _table(n: int, capacity: int, part_rows: int) -> SlotTable:
    """n windows, one a second from T0, written in id order into a ring of ``capacity`` (wrapping)."""
    t = SlotTable(capacity, part_rows)
    for a in range(0, n, capacity):  # one lap of the ring per put (a put has no repeated slot)
        ids = np.arange(a + 1, min(n, a + capacity) + 1)
        t.put((ids - 1) % capacity, ids, T0 + (ids - 1) * S, T0 + ids * S, CODES[(ids - 1) % 4])
    return t


def test_ranges_visit_only_partitions_overlapping_the_time_filter() -> None:
    t = _table(1000, 1000, 100)  # partition p holds windows 100p+1 .. 100p+100
    assert t.ranges() == [(0, 1000)]
    assert t.ranges(since_ns=T0 + 950 * S) == [(900, 1000)]
    assert t.ranges(since_ns=T0 + 900 * S) == [(800, 1000)]  # window 900 ends at since: included
    assert t.ranges(until_ns=T0 + 150 * S) == [(0, 200)]
    assert t.ranges(T0 + 420 * S, T0 + 530 * S) == [(400, 600)]
    assert t.ranges(since_ns=T0 + 2000 * S) == []


def test_ranges_follow_the_ring_after_it_wraps_and_after_expiry() -> None:
    t = _table(1250, 1000, 100)  # slots 0..249 now hold the newest windows 1001..1250
    assert t.ranges(since_ns=T0 + 1200 * S) == [(100, 300)]  # bounds of the rewritten partitions are exact
    assert t.ranges(until_ns=T0 + 300 * S) == [(200, 400)]  # slot 250.. still holds windows 251..
    ids = t.expire(T0 + 600 * S)  # windows ending before 600 s: 251..599
    assert ids.tolist() == list(range(251, 600)) and np.all(t.id[250:599] == 0) and np.all(t.mod[250:599] == -1)
    assert t.ranges(until_ns=T0 + 650 * S) == [(500, 700)]
    assert t.expire(T0 + 600 * S).size == 0
    empty = SlotTable(10, 4)
    assert empty.ranges() == [] and empty.expire(T0).size == 0


def test_mask_and_modality_codes() -> None:
    t = _table(12, 16, 4)
    m = t.mask(0, 16, T0 + 4 * S, T0 + 9 * S, modality_codes(["audio", "imu"]))
    assert np.flatnonzero(m).tolist() == [4, 5, 8, 9]  # windows 5, 6, 9, 10 (audio, imu) in [4 s, 9 s]
    assert modality_codes(None) is None and modality_codes("depth").tolist() == [CODES[2]]
    with pytest.raises(ValueError):
        modality_codes("smell")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_scan_is_exact_and_breaks_ties_by_the_newer_window(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    monkeypatch.setattr(memory_scan, "CHUNK_ROWS", 64)
    rng = np.random.default_rng(3)
    n, dim = 1000, 16
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    q = vecs[7].copy()
    vecs[[5, 70, 300, 301, 640, 999]] = q  # six exact ties at the top, spread over chunks
    t = _table(n, n, 50)
    v = vecs.astype(dtype)
    scores, slots = scan(v, t, q, 4)
    assert (t.id[slots] == [1000, 641, 302, 301]).all() and np.allclose(scores, 1.0, atol=1e-3)
    ref = v.astype(np.float32) @ q
    cases = [(10, None, None, None), (25, T0 + 500 * S, None, 0.2), (7, None, modality_codes("thermal"), None),
             (3, T0 + 990 * S, None, 0.99)]  # fmt: skip
    for k, since, codes, floor in cases:
        keep = np.ones(n, bool) if since is None else t.end >= since
        if codes is not None:
            keep &= np.isin(t.mod, codes)
        if floor is not None:
            keep &= ref >= floor
        idx = np.flatnonzero(keep)
        want = idx[np.lexsort((-t.id[idx], -ref[idx]))][:k]
        scores, slots = scan(v, t, q, k, since_ns=since, codes=codes, min_score=floor)
        assert slots.tolist() == want.tolist()
        np.testing.assert_allclose(scores, ref[want], atol=1e-6)


def test_a_time_filtered_search_reads_only_its_partitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Vectors outside the selected partitions are never read: poisoning them does not change the result."""
    monkeypatch.setattr(memory_slots, "PART_ROWS", 128)
    mem = EmbeddingMemory(tmp_path / "m", 8, max_windows=2048)
    rng = np.random.default_rng(0)
    starts = T0 + np.arange(2048) * S
    mem.append_many("a", "audio", starts, starts + S, rng.standard_normal((2048, 8)))
    q = rng.standard_normal(8).astype(np.float32)
    since = T0 + 2000 * S
    before = [(h.id, h.score) for h in mem.search(q, 5, since_ns=since)]
    assert len(before) == 5 and all(i > 1999 for i, _ in before)
    mem._vec[:1920] = q / np.linalg.norm(q)  # partitions 0..14 (windows 1..1920) end before `since`
    assert [(h.id, h.score) for h in mem.search(q, 5, since_ns=since)] == before
    (top,) = mem.search(q, 1)  # a full scan does read them
    assert top.id <= 1920 and top.score > 0.999
    mem.close()


def test_age_retention_with_many_partitions_matches_brute_force(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(memory_slots, "PART_ROWS", 16)
    now = [T0 + 500 * S]
    mem = EmbeddingMemory(tmp_path / "m", 4, max_windows=300, max_age_s=100, clock_ns=lambda: now[0])
    rng = np.random.default_rng(1)
    for i in range(500):  # window i covers [T0 + i s, T0 + i s + 2 s]
        mem.append("s", "imu", 0, 2 * S, rng.standard_normal(4), wall_start_ns=T0 + i * S)
    mem.flush()
    q = np.ones(4, np.float32)
    assert len(mem) == 102 and mem.stats()["oldest_ns"] == T0 + 398 * S  # windows ending at >= now - 100 s
    now[0] += 50 * S
    assert {h.id for h in mem.search(q, 500)} == set(range(449, 501))  # window id i + 1 ends at T0 + i s + 2 s
    assert mem.evicted_age + mem.evicted_size == 448
    mem.set_meta({"model_id": "m1"})
    assert mem.meta()["model_id"] == "m1"
    mem.close()


class _ChunkHookLock:
    """The memory's RLock, running ``hook`` once when it is taken for the ``at``-th time (between two chunks)."""

    def __init__(self, inner: object, at: int, hook: object) -> None:
        self.inner, self.at, self.hook, self.taken, self.fired = inner, at, hook, 0, False

    def __enter__(self) -> None:
        self.taken += 1
        if self.taken >= self.at and not self.fired:
            self.fired = True
            self.hook()  # type: ignore[operator]
        self.inner.__enter__()  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        self.inner.__exit__(*exc)  # type: ignore[attr-defined]


def test_search_releases_the_lock_between_chunks_and_drops_rewritten_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends land between scan chunks (the inference thread never waits for a whole scan); a hit
    on a slot the ring rewrote meanwhile is dropped instead of pairing an old score with a new window."""
    monkeypatch.setattr(memory_scan, "CHUNK_ROWS", 100)
    rng = np.random.default_rng(3)
    mem = EmbeddingMemory(tmp_path / "m", 8, max_windows=1000, commit_every=10_000)
    vecs = rng.standard_normal((1000, 8)).astype(np.float32)
    mem.append_many("s", "audio", T0 + np.arange(1000) * S, T0 + np.arange(1, 1001) * S, vecs)
    q = vecs[0]  # window 1, slot 0: the oldest, scored in the first chunk

    def wrap_the_ring() -> None:
        for i in range(5):  # windows 1001..1005 take slots 0..4, evicting windows 1..5
            mem.append("s", "audio", T0 + (1000 + i) * S, T0 + (1001 + i) * S, rng.standard_normal(8))

    hooked = _ChunkHookLock(mem._lock, at=4, hook=wrap_the_ring)  # after the ranges and two chunks
    monkeypatch.setattr(mem, "_lock", hooked)
    hits = mem.search(q, top_k=10)
    assert hooked.fired and hooked.taken > 10  # one acquisition per chunk, not one for the whole scan
    assert hits and all(h.id not in range(1, 6) for h in hits)  # evicted windows are gone ...
    assert all(h.id not in range(1001, 1006) for h in hits)  # ... and never reported under the new ids
    for h in hits:  # every score is the stored window's own
        v = mem.vectors([h.id])[0]
        assert h.score == pytest.approx(float(v @ (q / np.linalg.norm(q))), abs=1e-5)
    mem.close()
