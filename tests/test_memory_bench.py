"""benchmarks/memory_search: the bulk fill, one isolated case end to end, the neighbour load and the report."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import memory_search as bench
from benchmarks.memory_search_report import markdown, merged_rows, plot
from runtime.memory import EmbeddingMemory

S = 1_000_000_000


def test_fill_stores_every_stream_at_its_rate_in_time_order(tmp_path: Path) -> None:
    mem = EmbeddingMemory(tmp_path / "m", 8, max_windows=10_000)
    t_end = 1_800_000_000 * S
    done: list[int] = []
    bench.fill(mem, 120, np.random.default_rng(0), t_end, block_s=50, progress=done.append)
    stats = mem.stats()
    assert len(mem) == sum(done) == bench.windows_for(120) == 2520 and len(done) == 3 * 4  # 3 blocks x 4 streams
    assert stats["by_modality"] == {"audio": 120, "imu": 120, "depth": 1200, "thermal": 1080}
    assert stats["oldest_ns"] == t_end - 120 * S and stats["newest_ns"] == t_end
    for mod, rate in bench.RATES.items():
        hits = mem.search(np.ones(8), 5000, modality=mod)
        starts = np.sort([h.start_ns for h in hits])
        assert starts.size == 120 * rate and np.all(np.abs(np.diff(starts) - S / rate) <= 1)  # no gap across blocks
    mem.close()


def test_a_case_runs_in_its_own_process_and_cleans_up(tmp_path: Path) -> None:
    case = {"span": "hour", "dim": 16, "iters": 2, "base": tmp_path, "seed": 0, "dtype": "float16", "block_s": 1800}
    done: list[int] = []
    row = bench.run_isolated(case, done.append, blas_threads=1)
    assert sum(done) == row["windows"] == 75_600 and row["blas_threads"] == 1 and row["busy"] == 0
    assert row["vector_file_bytes"] == 75_600 * 16 * 2 and row["sqlite_bytes"] > 0
    assert row["index_ram_bytes"] == 75_600 * 25 and 0 < row["rss_after_search"]["anon"] < 1 << 30
    for key in ("search_all", "search_last_hour", "search_audio"):
        assert 0 < row[key]["p50_ms"] <= row[key]["p99_ms"]
    assert len(row["loadavg_start"]) == 3 and list(tmp_path.iterdir()) == []  # the store is deleted
    with pytest.raises(RuntimeError, match="failed: KeyError"):
        bench.run_isolated({**case, "span": "month"}, done.append)


def test_spinning_burns_a_core_while_the_block_runs() -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    with bench.spinning(1):
        time.sleep(0.5)
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before > 0.2  # the reaped spinner's CPU time
    with bench.spinning(0):
        pass


def _row(span: str, windows: int, dtype: str = "float32", threads: int | None = None, ms: float = 1.0) -> dict:
    lat = {"p50_ms": ms, "p99_ms": 2 * ms, "max_ms": 2 * ms}
    return {"span": span, "dim": 64, "dtype": dtype, "blas_threads": threads, "busy": 0, "windows": windows,
            "iters": 3, "fill_s": 1.0, "open_s": 0.1, "search_all": lat, "search_last_hour": lat,
            "search_audio": lat, "loadavg_start": [1.0, 1.0, 1.0], "loadavg_end": [1.5, 1.0, 1.0],
            "vector_file_bytes": windows * 256, "sqlite_bytes": windows * 45, "index_ram_bytes": windows * 25,
            "rss_after_search": {"total": 3 << 20, "anon": 2 << 20, "file": 1 << 20}}  # fmt: skip


def test_merge_replaces_remeasured_cases_and_the_report_renders(tmp_path: Path) -> None:
    old = [_row("hour", 75_600), _row("day", 1_814_400), _row("day", 1_814_400, threads=1)]
    new = [_row("day", 1_814_400, ms=7.0)]
    rows = merged_rows(old, new)
    assert [(r["span"], r["blas_threads"], r["search_all"]["p50_ms"]) for r in rows] == [
        ("hour", None, 1.0), ("day", 1, 1.0), ("day", None, 7.0)]  # fmt: skip
    payload = {"date": "2026-11-28", "machine": "cpu", "cpus": 2, "rows": rows,
               "runs": [{"command": "python -m benchmarks.memory_search", "loadavg_start": [1, 1, 1],
                         "loadavg_end": [2, 1, 1]}]}  # fmt: skip
    md = "\n".join(markdown(payload))
    assert "| day | 64 | float32 | 1 | 0 | 1,814,400 | 3 | 1.0 / 2.0 |" in md and "load [1, 1, 1] -> [2, 1, 1]" in md
    pytest.importorskip("matplotlib")
    png = plot(payload, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
