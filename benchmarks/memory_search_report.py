"""The report of ``python -m benchmarks.memory_search``: the Markdown table, the plot, merging rows of reruns.

A row is one measured case (see :func:`benchmarks.memory_search.run_one`): span, D, dtype, BLAS
threads, busy neighbour cores, latencies (p50/p99 ms) and footprint (bytes). matplotlib is imported
inside :func:`plot`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MB = 1 << 20
# windows per second per stream: sim rates / the demo manifest's window hops
# (audio 16 kHz, hop 16000; imu 400 Hz, hop 400; depth 10 Hz and thermal 9 Hz, one window per frame)
RATES = {"audio": 1.0, "imu": 1.0, "depth": 10.0, "thermal": 9.0}


def markdown(payload: dict[str, Any]) -> list[str]:
    rates = ", ".join(f"{k} {v:g}/s" for k, v in RATES.items())
    rows = payload["rows"]
    lines = [
        f"# Embedding memory search ({payload['date']}, {payload['machine']}, {payload['cpus']} CPUs)",
        "",
        f"Four demo streams, {sum(RATES.values()):g} windows/s ({rates}); exact brute-force cosine, top 10, "
        "numpy/OpenBLAS on a shared 2-core VM (BLAS threads: `default` = one per core, or pinned with "
        "`--blas-threads`); `busy cores`: processes spinning on a CPU during the timed searches (a neighbour such "
        "as inference, `--busy`). `all`: every window; `last hour`: since = now - 1 h; `audio`: modality filter. "
        "p50 / p99 over `iters` timed searches after one warm-up. "
        "Disk: vector file + SQLite (with WAL). RSS after the searches, each case in a fresh process: anonymous "
        "(slot index, Python, numpy) + mapped vector pages (page cache, reclaimable). Load: `os.getloadavg()` "
        "1-min average before / after the timed searches of the row (the machine is shared).",
        "",
        "| span | D | dtype | BLAS threads | busy cores | windows | iters | search all p50 / p99 ms "
        "| last hour p50 / p99 ms | audio p50 ms | build s | reopen s | vectors MB | SQLite MB | index RAM MB "
        "| RSS anon + file MB | load 1-min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, h, rss = r["search_all"], r["search_last_hour"], r["rss_after_search"]
        load = f"{r['loadavg_start'][0]:.2f} / {r['loadavg_end'][0]:.2f}" if r["loadavg_start"] else "?"
        lines.append(
            f"| {r['span']} | {r['dim']} | {r['dtype']} | {r.get('blas_threads') or 'default'} | {r.get('busy', 0)} | "
            f"{r['windows']:,} | "
            f"{r['iters']} | {a['p50_ms']:.1f} / "
            f"{a['p99_ms']:.1f} | {h['p50_ms']:.1f} / {h['p99_ms']:.1f} | {r['search_audio']['p50_ms']:.1f} | "
            f"{r['fill_s']:.0f} | {r['open_s']:.1f} | {r['vector_file_bytes'] / MB:,.0f} | "
            f"{r['sqlite_bytes'] / MB:,.0f} | {r['index_ram_bytes'] / MB:.0f} | "
            f"{rss['anon'] / MB:,.0f} + {rss['file'] / MB:,.0f} | {load} |"
        )
    lines += ["", "Runs (load averages over 1, 5, 15 min at the start and the end of each run):", ""]
    lines += [f"- `{r['command']}`: load {r['loadavg_start']} -> {r['loadavg_end']}" for r in payload["runs"]]
    return lines


def plot(payload: dict[str, Any], out: Path) -> Path:
    """Two panels vs stored windows (log x): search latency p50 with p99 bars, and footprint in MB.

    Colour: the configuration (store dtype, BLAS threads, busy cores); line style and marker: the
    query (latency) or the measure (footprint). Footprint does not depend on threads or neighbours:
    one set of lines per store (D, dtype).
    """
    import matplotlib
    import matplotlib.ticker
    from matplotlib.lines import Line2D

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 6.2))
    groups = sorted({group_of(r) for r in payload["rows"]}, key=lambda g: (g[1] != "float32", g[3], g[2] or 0, g[0]))
    ticks = {r["windows"]: f"1 {r['span']}\n{r['windows']:,}" for r in payload["rows"]}
    queries = (("search_all", "all windows", "o", "-"), ("search_last_hour", "last hour (since)", "s", "--"),
               ("search_audio", "audio only", "^", ":"))  # fmt: skip
    measures = (("on disk: vectors + SQLite", "o", "-"), ("process RSS", "s", "--"),
                ("RSS anonymous (index, Python)", "^", ":"))  # fmt: skip
    stores: dict[tuple[int, str], str] = {}
    for g, group in enumerate(groups):
        rows = sorted((r for r in payload["rows"] if group_of(r) == group), key=lambda r: r["windows"])
        xs, color = [r["windows"] for r in rows], f"C{g}"
        for key, _, marker, ls in queries:
            p50 = np.array([r[key]["p50_ms"] for r in rows])
            p99 = np.array([r[key]["p99_ms"] for r in rows])
            ax1.errorbar(xs, p50, yerr=[np.zeros_like(p50), p99 - p50], color=color, ls=ls, marker=marker, capsize=3)
        if group[:2] in stores:
            continue
        stores[group[:2]] = color
        disk = [(r["vector_file_bytes"] + r["sqlite_bytes"]) / MB for r in rows]
        rss = [r["rss_after_search"]["total"] / MB for r in rows]
        anon = [r["rss_after_search"]["anon"] / MB for r in rows]
        for (_, marker, ls), ys in zip(measures, (disk, rss, anon), strict=True):
            ax2.plot(xs, ys, color=color, ls=ls, marker=marker)
    ax1.axhline(1000, color="red", lw=0.8)
    ax1.text(min(ticks) / 1.8, 1100, "1 s", color="red", fontsize=8)
    style = lambda marker, ls, c="0.3": Line2D([], [], color=c, marker=marker, ls=ls)  # noqa: E731
    ax1.legend([style(m, ls) for _, _, m, ls in queries], [q[1] for q in queries], fontsize=8, loc="lower right")
    ax2.legend([style(m, ls) for _, m, ls in measures], [m[0] for m in measures], fontsize=8, loc="upper left")
    for ax, title, ylabel in ((ax1, "search latency (p50, bar to p99), top 10", "latency (ms)"),
                              (ax2, "memory footprint", "size (MB)")):  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)], minor=False)
        ax.set_xticks([], minor=True)
        ax.set_xlim(min(ticks) / 2, max(ticks) * 2)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("stored windows (4 streams, 21 windows/s)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    configs = [Line2D([], [], color=f"C{g}", lw=3) for g in range(len(groups))]
    fig.legend(configs, [label_of(*g) for g in groups], loc="lower center", ncol=min(4, len(groups)), fontsize=9,
               title="colour: configuration (BLAS threads default = one per core)", title_fontsize=9)  # fmt: skip
    fig.suptitle(f"Embedding memory, exact search ({payload['machine']}, {payload['cpus']} CPUs, {payload['date']})",
                 fontsize=10)  # fmt: skip
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def group_of(row: dict[str, Any]) -> tuple[int, str, int | None, int]:
    return row["dim"], row["dtype"], row.get("blas_threads"), row.get("busy", 0)


def label_of(dim: int, dtype: str, threads: int | None, busy: int) -> str:
    threads_s = f", {threads} BLAS thread{'s' * (threads > 1)}" if threads else ""
    return f"D={dim} {dtype}{threads_s}" + (f", {busy} busy core{'s' * (busy > 1)}" if busy else "")


def merged_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` rows with the cases measured again replaced by the ``new`` ones (same span, D, dtype, threads)."""
    fresh = {(r["span"], *group_of(r)) for r in new}
    return [r for r in old if (r["span"], *group_of(r)) not in fresh] + new
