"""``python -m benchmarks.memory_search``: embedding-memory search latency and footprint vs stored windows.

Fills a :class:`runtime.memory.EmbeddingMemory` (float32 vectors; ``--dtypes`` adds float16)
with the windows that the demo bundle's four streams make in 1 hour, 1 day and 1 week (audio
1/s, IMU 1/s, depth 10/s, thermal 9/s = 21 windows/s, see :data:`RATES`: 75,600, 1.81 M and
12.7 M windows) at D=64 (bundles/demo; ``--dims`` adds e.g. 1024, imagebind_huge), built in
bulk (:meth:`EmbeddingMemory.append_many`, one call per stream per ``--block-s`` of time,
time-ordered like a live recording) with a progress bar, then measures: reopening the store
(slot index rebuilt from SQLite), one search over everything (exact brute-force cosine, top
10), one restricted to the last hour (``since``) and one to one modality (audio), p50/p99
over ``--iters`` queries (``--week-iters`` for the week) after one warm-up; and the footprint:
vector file, SQLite files (with WAL), on-disk allocation, the in-RAM slot index and the
process's RSS after the searches (each case runs in a fresh spawned process), split into
anonymous memory (index, Python) and mapped file pages (the vectors the scans touched: page
cache, reclaimable). The machine is shared: each row records ``os.getloadavg()`` before and
after its timed searches. ``--blas-threads N`` pins OpenBLAS's threads in the measuring
process; ``--busy N`` keeps N processes spinning on the CPU during the timed searches (a
neighbour such as inference: OpenBLAS's multi-threaded matrix-vector product then waits for
the busy core). ``--merge`` adds the rows to today's report of the same tag (a rerun of a
case replaces its row). Writes ``benchmarks/results/memory-search-<tag>-<date>.{json,md,png}``
(:mod:`benchmarks.memory_search_report`); the stores are built under ``--dir`` (default: a
temporary directory under /tmp) and deleted after each row.

    python -m benchmarks.memory_search [--spans hour,day,week] [--dims 64] [--dtypes float32]
        [--iters 20] [--week-iters 10] [--blas-threads 1] [--busy 1] [--merge] [--dir /tmp/x]
        [--tag cpu-xeon-2core]

numpy + runtime only (rich for the progress bar and matplotlib for the plot, imported inside).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np

from benchmarks.memory_search_report import RATES, label_of, markdown, merged_rows, plot
from benchmarks.report import save_report
from runtime.memory import DB_FILE, VEC_FILE, EmbeddingMemory

RESULTS = Path(__file__).resolve().parent / "results"
SPANS = {"hour": 3600, "day": 86_400, "week": 604_800}
S = 1_000_000_000
POOL = 65_536  # distinct random vectors, tiled (latency does not depend on the values)
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
Progress = Callable[[int], None]  # called with the windows just stored


def windows_for(span_s: int) -> int:
    return int(sum(RATES.values()) * span_s)


def fill(mem: EmbeddingMemory, span_s: int, rng: np.random.Generator, t_end_ns: int, *, block_s: int = 3600,
         progress: Progress | None = None) -> float:  # fmt: skip
    """Store ``span_s`` seconds of the four streams ending at ``t_end_ns``, ``block_s`` at a time; returns seconds."""
    pool = rng.standard_normal((POOL, mem.dim)).astype(np.float32)
    t0 = time.perf_counter()
    start = t_end_ns - span_s * S
    for b0 in range(0, span_s, block_s):
        b1 = min(span_s, b0 + block_s)
        for name, rate in RATES.items():
            first, last = int(b0 * rate), int(b1 * rate)  # window indices of this stream in the block
            starts = start + (np.arange(first, last) * (S / rate)).astype(np.int64)
            at = int(rng.integers(POOL))
            vecs = np.take(pool, np.arange(at, at + starts.size) % POOL, axis=0)
            mem.append_many(name, name, starts, starts + int(S / rate), vecs, source="sim://bench")
            if progress is not None:
                progress(starts.size)
    mem.flush()
    return time.perf_counter() - t0


def rss_bytes() -> dict[str, int]:
    """The process's resident memory: total, anonymous and file-backed (Linux /proc; else the peak so far)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        kb = {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "RssAnon", "RssFile")}
        return {"total": kb["VmRSS"], "anon": kb["RssAnon"], "file": kb["RssFile"]}
    except (OSError, KeyError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {"total": peak, "anon": peak, "file": 0}


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared; [] where unknown)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def timed(fn: Callable[[], Any], iters: int) -> dict[str, float]:
    fn()  # warm-up (page cache, first allocation)
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    a = np.array(ts) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def run_one(span: str, dim: int, iters: int, base: Path, rng: np.random.Generator, *, dtype: str = "float32",
            block_s: int = 3600, busy: int = 0, progress: Progress | None = None) -> dict[str, Any]:  # fmt: skip
    """Build, reopen, search and measure one store; the store is deleted afterwards.

    ``busy``: processes spinning on the CPU during the timed searches (a neighbour, e.g. inference).
    """
    n = windows_for(SPANS[span])
    d = base / f"{span}-{dim}-{dtype}"
    shutil.rmtree(d, ignore_errors=True)
    now = time.time_ns()
    try:
        mem = EmbeddingMemory(d, dim, max_windows=n, commit_every=100_000, dtype=dtype)
        fill_s = fill(mem, SPANS[span], rng, now, block_s=block_s, progress=progress)
        mem.close()
        del mem
        gc.collect()
        rss_before = rss_bytes()
        t = time.perf_counter()
        mem = EmbeddingMemory(d)
        open_s = time.perf_counter() - t
        q = rng.standard_normal(dim).astype(np.float32)
        t = time.perf_counter()
        first = mem.search(q, 10)
        first_ms = (time.perf_counter() - t) * 1e3
        assert len(first) == 10 and len(mem) == n
        threads = os.environ.get("OPENBLAS_NUM_THREADS")
        row: dict[str, Any] = {
            "span": span, "dim": dim, "dtype": dtype, "blas_threads": int(threads) if threads else None,
            "busy": busy, "windows": n, "iters": iters,
            "fill_s": round(fill_s, 2), "fill_windows_per_s": round(n / fill_s), "open_s": round(open_s, 3),
            "first_search_ms": round(first_ms, 2),
        }  # fmt: skip
        with spinning(busy):
            row["loadavg_start"] = loadavg()
            row["search_all"] = timed(lambda: mem.search(q, 10), iters)
            row["search_last_hour"] = timed(lambda: mem.search(q, 10, since_ns=now - 3600 * S), iters)
            row["search_audio"] = timed(lambda: mem.search(q, 10, modality="audio"), iters)
            row["loadavg_end"] = loadavg()
        st = mem.stats()
        rss = rss_bytes()  # includes the vector pages the scans touched (file-backed, reclaimable)
        mem.close()
        allocated = sum(p.stat().st_blocks * 512 for p in d.iterdir() if p.is_file())
    finally:
        shutil.rmtree(d, ignore_errors=True)
    row["vector_file_bytes"] = st["disk_bytes"].get(VEC_FILE, 0)
    row["sqlite_bytes"] = st["disk_bytes"].get(DB_FILE, 0) + st["disk_bytes"].get(f"{DB_FILE}-wal", 0)
    row["disk_allocated_bytes"] = int(allocated)
    row["index_ram_bytes"] = st["index_bytes"]
    row["rss_before_open"] = rss_before
    row["rss_after_search"] = rss
    return row


@contextlib.contextmanager
def spinning(n: int) -> Iterator[None]:
    """``n`` processes burning one CPU each for the duration of the block (none for n = 0)."""
    ctx = multiprocessing.get_context("spawn")
    ready = [ctx.Event() for _ in range(n)]
    procs = [ctx.Process(target=_spin, args=(e,), daemon=True) for e in ready]
    try:
        for proc in procs:
            proc.start()
        for e in ready:
            e.wait(30)
        yield
    finally:
        for proc in procs:
            if proc.pid is not None:  # started
                proc.terminate()
                proc.join()


def _spin(ready: Any) -> None:
    ready.set()
    while True:
        pass


def run_isolated(case: dict[str, Any], progress: Progress, blas_threads: int | None = None) -> dict[str, Any]:
    """:func:`run_one` in a fresh (spawned) process, so that each row's RSS is its own case's only.

    ``case``: run_one's arguments, with ``seed`` for the random vectors. ``blas_threads``: the BLAS
    thread count of that process (None: the inherited environment). Raises RuntimeError if the case fails.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_case_worker, args=(queue, case))  # not a daemon: it may start spinners
    saved = {k: os.environ.get(k) for k in BLAS_ENV}
    try:  # the child reads them when numpy loads OpenBLAS
        if blas_threads is not None:
            os.environ.update({k: str(blas_threads) for k in BLAS_ENV})
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        while True:
            try:
                kind, value = queue.get(timeout=1.0)
            except Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"case {case} died (exit code {proc.exitcode})") from None
                continue
            if kind == "windows":
                progress(value)
            elif kind == "row":
                return value
            else:
                raise RuntimeError(f"case {case} failed: {value}")
    finally:
        proc.join(timeout=60)


def _case_worker(queue: Any, case: dict[str, Any]) -> None:
    try:
        c = dict(case)
        rng = np.random.default_rng(c.pop("seed"))
        row = run_one(c.pop("span"), c.pop("dim"), c.pop("iters"), c.pop("base"), rng, **c,
                      progress=lambda k: queue.put(("windows", k)))  # fmt: skip
        queue.put(("row", row))
    except Exception as exc:  # reported to the parent, which raises
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory_search", description=__doc__.splitlines()[0])
    p.add_argument("--spans", default="hour,day,week", help="comma list of hour, day, week")
    p.add_argument("--dims", default="64", help="comma list of vector sizes (a week at D=1024 is 52 GB float32)")
    p.add_argument("--dtypes", default="float32", help="comma list: float32 (the default store), float16")
    p.add_argument("--iters", type=int, default=20, help="timed searches per case")
    p.add_argument("--week-iters", type=int, default=10, help="timed searches per case for the week")
    p.add_argument("--block-s", type=int, default=3600, help="seconds of each stream stored per bulk append")
    p.add_argument("--dir", type=Path, help="scratch dir (default: a temporary one under /tmp)")
    p.add_argument("--tag", default="cpu", help="file name tag, e.g. the machine")
    p.add_argument("--blas-threads", type=int, help="BLAS threads of the measuring processes (default: inherited)")
    p.add_argument("--busy", type=int, default=0, help="processes spinning on the CPU during the timed searches")
    p.add_argument("--merge", action="store_true", help="add the rows to today's report of the same tag")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    spans = [s.strip() for s in args.spans.split(",") if s.strip()]
    if any(s not in SPANS for s in spans):
        print(f"error: spans must be among {', '.join(SPANS)}", file=sys.stderr)
        return 2
    dims = [int(x) for x in args.dims.split(",")]
    cases = [(t, d, s) for t in args.dtypes.split(",") for d in dims for s in spans]
    base = args.dir or Path(tempfile.mkdtemp(prefix="edgebind-memory-bench-"))
    load_start, rows = loadavg(), []
    try:
        with _progress_bar() as bar:
            task = bar.add_task("building", total=sum(windows_for(SPANS[s]) for _, _, s in cases))
            for seed, (dtype, dim, span) in enumerate(cases):
                bar.update(task, description=f"{span} D={dim} {dtype}")
                iters = args.week_iters if span == "week" else args.iters
                case = {"span": span, "dim": dim, "iters": iters, "base": base, "seed": seed, "dtype": dtype,
                        "block_s": args.block_s, "busy": args.busy}  # fmt: skip
                row = run_isolated(case, lambda k: bar.advance(task, k), args.blas_threads)
                bar.console.print(_summary(row))
                rows.append(row)
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    from benchmarks.common import cpu_model

    date = dt.date.today().isoformat()
    stem = f"memory-search-{args.tag}-{date}"
    command = "python -m benchmarks.memory_search " + " ".join(argv if argv is not None else sys.argv[1:])
    run = {"command": command, "loadavg_start": load_start, "loadavg_end": loadavg()}
    old = args.out / f"{stem}.json"
    prior = json.loads(old.read_text()) if args.merge and old.exists() else {}
    payload = {
        "benchmark": "memory_search", "date": date, "machine": cpu_model(), "cpus": os.cpu_count(),
        "rates_per_s": RATES, "top_k": 10, "block_s": args.block_s,
        "runs": [*prior.get("runs", []), run], "rows": merged_rows(prior.get("rows", []), rows),
    }  # fmt: skip
    md = save_report(args.out, stem, payload, markdown(payload))
    plot(payload, args.out / f"{stem}.png")
    print(md)
    return 0


def _summary(row: dict[str, Any]) -> str:
    label = label_of(row["dim"], row["dtype"], row["blas_threads"], row["busy"])
    return (f"{row['span']} {label}: {row['windows']:,} windows, search p50 {row['search_all']['p50_ms']:.1f} ms, "
            f"build {row['fill_s']:.1f} s, reopen {row['open_s']:.2f} s, "
            f"load {row['loadavg_start']} -> {row['loadavg_end']}")  # fmt: skip


def _progress_bar() -> Any:
    """A rich progress bar counting the windows stored (the build phase of every case)."""
    from rich import progress as rp

    return rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
                       rp.TextColumn("windows"), rp.TimeElapsedColumn(), rp.TimeRemainingColumn())  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
