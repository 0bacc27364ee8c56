"""``python -m benchmarks.memory_search``: embedding-memory search latency and footprint vs stored windows.

Fills a :class:`runtime.memory.EmbeddingMemory` (float32 vectors; ``--dtypes`` adds float16)
with the windows that the demo bundle's four streams make in 1 hour, 1 day and 1 week (audio 1/s, IMU 1/s, depth
10/s, thermal 9/s = 21 windows/s, see :data:`RATES`) at D=64 (bundles/demo) and D=1024
(imagebind_huge), then measures: reopening the store (index rebuilt from SQLite), one
search over everything (exact brute-force cosine, top 10), one restricted to the last
hour (``since``) and one restricted to one modality (audio), p50/p99 over ``--iters``
queries after one warm-up; and the footprint: vector file, SQLite files (with WAL), the
in-RAM slot index and the process's RSS after the searches (touched vector pages included).
Writes ``benchmarks/results/memory-search-<tag>-<date>.{json,md,png}``.

    python -m benchmarks.memory_search [--spans hour,day] [--dims 64,1024] [--iters 20] [--dir /tmp/x]

numpy + runtime only (matplotlib for the plot, imported inside).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import save_report
from runtime.memory import DB_FILE, VEC_FILE, EmbeddingMemory

RESULTS = Path(__file__).resolve().parent / "results"
# windows per second per stream: sim rates / the demo manifest's window hops
# (audio 16 kHz, hop 16000; imu 400 Hz, hop 400; depth 10 Hz and thermal 9 Hz, one window per frame)
RATES = {"audio": 1.0, "imu": 1.0, "depth": 10.0, "thermal": 9.0}
SPANS = {"hour": 3600, "day": 86_400, "week": 604_800}
S = 1_000_000_000
POOL = 65_536  # distinct random vectors, tiled (latency does not depend on the values)


def windows_for(span_s: int) -> int:
    return int(sum(RATES.values()) * span_s)


def fill(mem: EmbeddingMemory, span_s: int, rng: np.random.Generator, t_end_ns: int) -> float:
    """Store ``span_s`` seconds of the four streams, hour by hour; returns seconds taken."""
    pool = rng.standard_normal((POOL, mem.dim)).astype(np.float32)
    t0 = time.perf_counter()
    start = t_end_ns - span_s * S
    for h0 in range(0, span_s, 3600):
        h1 = min(span_s, h0 + 3600)
        for name, rate in RATES.items():
            n = int((h1 - h0) * rate)
            starts = start + h0 * S + (np.arange(n) * (S / rate)).astype(np.int64)
            at = int(rng.integers(POOL))
            vecs = np.take(pool, np.arange(at, at + n) % POOL, axis=0)
            mem.append_many(name, name, starts, starts + int(S / rate), vecs, source="sim://bench")
    mem.flush()
    return time.perf_counter() - t0


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; else the peak so far)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed(fn: Any, iters: int) -> dict[str, float]:
    fn()  # warm-up (page cache, first allocation)
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    a = np.array(ts) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def run_one(span: str, dim: int, iters: int, base: Path, rng: np.random.Generator, *,
            dtype: str = "float32") -> dict[str, Any]:  # fmt: skip
    n = windows_for(SPANS[span])
    d = base / f"{span}-{dim}-{dtype}"
    shutil.rmtree(d, ignore_errors=True)
    now = time.time_ns()
    mem = EmbeddingMemory(d, dim, max_windows=n, commit_every=100_000, dtype=dtype)
    fill_s = fill(mem, SPANS[span], rng, now)
    mem.close()
    del mem
    gc.collect()
    t = time.perf_counter()
    mem = EmbeddingMemory(d)
    open_s = time.perf_counter() - t
    q = rng.standard_normal(dim).astype(np.float32)
    t = time.perf_counter()
    first = mem.search(q, 10)
    first_ms = (time.perf_counter() - t) * 1e3
    assert len(first) == 10 and len(mem) == n
    row: dict[str, Any] = {
        "span": span,
        "dim": dim,
        "dtype": dtype,
        "windows": n,
        "fill_s": round(fill_s, 2),
        "open_s": round(open_s, 3),
        "first_search_ms": round(first_ms, 2),
        "search_all": timed(lambda: mem.search(q, 10), iters),
        "search_last_hour": timed(lambda: mem.search(q, 10, since_ns=now - 3600 * S), iters),
        "search_audio": timed(lambda: mem.search(q, 10, modality="audio"), iters),
    }
    st = mem.stats()
    rss = rss_bytes()  # includes the vector pages the scans touched (file-backed, reclaimable)
    mem.close()
    row["vector_file_bytes"] = st["disk_bytes"].get(VEC_FILE, 0)
    row["sqlite_bytes"] = st["disk_bytes"].get(DB_FILE, 0) + st["disk_bytes"].get(f"{DB_FILE}-wal", 0)
    row["index_ram_bytes"] = st["index_bytes"]
    row["rss_after_search_bytes"] = rss
    shutil.rmtree(d, ignore_errors=True)
    return row


def markdown(payload: dict[str, Any]) -> list[str]:
    mb = 1 << 20
    rates = ", ".join(f"{k} {v:g}/s" for k, v in RATES.items())
    lines = [
        f"# Embedding memory search ({payload['date']}, {payload['machine']})",
        "",
        f"Four demo streams, {sum(RATES.values()):g} windows/s ({rates}); "
        "exact brute-force cosine, top 10, one thread of numpy. "
        "`all`: every window; `last hour`: since = now - 1 h; `audio`: modality filter. "
        "RSS: the process after the searches, mapped vector pages included (page cache, reclaimable).",
        "",
        "| span | D | dtype | windows | search all p50 / p99 ms | last hour p50 ms | audio p50 ms | reopen s "
        "| vectors MB | SQLite MB | index RAM MB | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        lines.append(
            f"| {r['span']} | {r['dim']} | {r['dtype']} | {r['windows']:,} | {r['search_all']['p50_ms']:.1f} / "
            f"{r['search_all']['p99_ms']:.1f} | {r['search_last_hour']['p50_ms']:.1f} | "
            f"{r['search_audio']['p50_ms']:.1f} | {r['open_s']:.2f} | {r['vector_file_bytes'] / mb:.0f} | "
            f"{r['sqlite_bytes'] / mb:.0f} | {r['index_ram_bytes'] / mb:.1f} | {r['rss_after_search_bytes'] / mb:.0f} |"
        )
    lines += ["", f"Command: `{payload['command']}`"]
    return lines


def plot(payload: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for dim, dtype in sorted({(r["dim"], r["dtype"]) for r in payload["rows"]}):
        rows = [r for r in payload["rows"] if (r["dim"], r["dtype"]) == (dim, dtype)]
        rows.sort(key=lambda r: r["windows"])
        tag = f"D={dim} {dtype}"
        xs = [r["windows"] for r in rows]
        ax1.plot(xs, [r["search_all"]["p50_ms"] for r in rows], "o-", label=f"{tag} all")
        ax1.plot(xs, [r["search_last_hour"]["p50_ms"] for r in rows], "s--", label=f"{tag} last hour")
        ax2.plot(xs, [(r["vector_file_bytes"] + r["sqlite_bytes"]) / (1 << 20) for r in rows], "o-",
                 label=f"{tag} disk")  # fmt: skip
        ax2.plot(xs, [r["index_ram_bytes"] / (1 << 20) for r in rows], "s--", label=f"{tag} index RAM")
    for ax, title, ylabel in ((ax1, "search latency (p50)", "ms"), (ax2, "footprint", "MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("stored windows")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax1.axhline(1000, color="red", lw=0.8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory_search", description=__doc__.splitlines()[0])
    p.add_argument("--spans", default="hour,day,week", help="comma list of hour, day, week")
    p.add_argument("--dims", default="64,1024", help="comma list of vector sizes")
    p.add_argument("--dtypes", default="float32", help="comma list: float32 (the default store), float16")
    p.add_argument("--iters", type=int, default=20, help="timed searches per case")
    p.add_argument("--dir", type=Path, help="scratch dir (default: a temporary one; a week at D=1024 is 52 GB float32)")
    p.add_argument("--tag", default="cpu", help="file name tag, e.g. the machine")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    spans = [s.strip() for s in args.spans.split(",") if s.strip()]
    if any(s not in SPANS for s in spans):
        print(f"error: spans must be among {', '.join(SPANS)}", file=sys.stderr)
        return 2
    dims = [int(x) for x in args.dims.split(",")]
    base = args.dir or Path(tempfile.mkdtemp(prefix="edgebind-memory-bench-"))
    rng = np.random.default_rng(0)
    rows = []
    for dtype, dim, span in [(t, d, s) for t in args.dtypes.split(",") for d in dims for s in spans]:
        row = run_one(span, dim, args.iters, base, rng, dtype=dtype)
        print(f"{span} D={dim} {dtype}: {row['windows']:,} windows, search p50 {row['search_all']['p50_ms']:.1f} ms, "
              f"fill {row['fill_s']:.1f} s, reopen {row['open_s']:.2f} s", flush=True)  # fmt: skip
        rows.append(row)
    from benchmarks.common import cpu_model

    date = dt.date.today().isoformat()
    payload = {
        "benchmark": "memory_search",
        "date": date,
        "machine": cpu_model(),
        "rates_per_s": RATES,
        "top_k": 10,
        "iters": args.iters,
        "command": "python -m benchmarks.memory_search " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rows": rows,
    }
    stem = f"memory-search-{args.tag}-{date}"
    md = save_report(args.out, stem, payload, markdown(payload))
    plot(payload, args.out / f"{stem}.png")
    print(md)
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
