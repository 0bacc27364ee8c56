"""Markdown and PNG for a latency report (``benchmarks.latency`` and ``benchmarks.gpu`` payloads).

A payload is ``{"meta": {...}, "rows": [...]}``; rows are dicts with at least modality, engine,
precision, batch, baseline, status and, when ``status == "ok"``, p50/p90/p99, throughput,
speed-up and cosines. Absent and failed rows are listed with their reason, never dropped.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from benchmarks.report import save_report

HEADER = ("| modality | batch | engine | precision | p50 ms | p90 ms | p99 ms | rows/s | vs PyTorch FP32 | "
          "peak RSS MB (run) | GPU MB | cos mean / min | centred cos | gate |")  # fmt: skip


def write_report(payload: dict[str, Any], out_dir: Path, stem: str) -> Path:
    """Write ``stem.json``, ``stem.md`` and (with matplotlib) ``stem.png``; returns the Markdown path."""
    md = save_report(out_dir, stem, payload, markdown(payload, f"{stem}.png"))
    if importlib.util.find_spec("matplotlib") is not None:
        from benchmarks.plot import plot_latency

        try:
            plot_latency(payload, out_dir / f"{stem}.png")
        except Exception as exc:  # a chart must never cost the measured numbers
            print(f"warning: no PNG ({type(exc).__name__}: {exc})", file=sys.stderr)
    return md


def markdown(payload: dict[str, Any], png_name: str | None = None) -> list[str]:
    """The report as Markdown lines: machine, method, goal lines, one table, absent rows."""
    meta, rows = payload["meta"], payload["rows"]
    lines = [f"# Encoder latency: {meta.get('model', '?')} ({_where(meta)}, {meta.get('date', '')})", ""]
    lines += [*machine_lines(meta), "", *method_lines(meta), ""]
    lines += [*best_lines(rows), "", HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    lines += [table_row(r) for r in rows if r["status"] == "ok"]
    missing = missing_lines(rows)
    if missing:
        lines += ["", "## Absent or failed variants", "", *missing]
    if png_name:
        lines += ["", f"![latency and accuracy]({png_name})"]
    return lines


def missing_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per (modality, engine, precision, status, reason), batches merged."""
    merged: dict[tuple[str, str, str, str, str], list[str]] = {}
    for r in rows:
        if r["status"] != "ok":
            key = (r["modality"], r["engine"], r["precision"], r["status"], r.get("reason", ""))
            merged.setdefault(key, []).append(str(r["batch"]))
    return [f"- {m} {e} {p} (batch {', '.join(b)}): **{st}**: {why}" for (m, e, p, st, why), b in merged.items()]


def _where(meta: dict[str, Any]) -> str:
    gpu = meta.get("gpu") or {}
    return gpu.get("name") or f"{meta.get('cpu', '?')}, {meta.get('threads', '?')} threads"


def machine_lines(meta: dict[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in sorted(meta.get("versions", {}).items()))
    lines = [f"- Machine: {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores "
             f"({', '.join(meta.get('cpu_flags', [])) or 'flags unknown'}), {meta.get('threads', '?')} threads, "
             f"Python {meta.get('python', '?')}", f"- Libraries: {versions or 'unknown'}"]  # fmt: skip
    gpu = meta.get("gpu")
    if gpu:
        lines.append("- GPU: " + ", ".join(f"{k} {v}" for k, v in gpu.items()))
    return lines


def method_lines(meta: dict[str, Any]) -> list[str]:
    weights = "random weights" if meta.get("random_weights") else "checkpoint weights"
    return [
        f"Bundle `{meta.get('bundle', '-')}` ({meta.get('model', '?')}, {weights}, model_id "
        f"{str(meta.get('model_id', ''))[:12]}). Latency: {meta.get('iters')} timed calls after "
        f"at least {meta.get('warmup')} warm-up calls ({meta.get('warmup_s', 0)} s) per variant, "
        f"{meta.get('rounds', 1)} interleaved round(s), "
        f"{meta.get('timing', 'wall clock')}; each variant in its own process (peak RSS is its own).",
        "Speed-up = PyTorch FP32 eager p50 / row p50 at the same modality and batch, measured in the same run. "
        f"Cosines: the row's outputs vs the PyTorch FP32 eager outputs on the same {meta.get('acc_n', '?')} "
        "seeded structured inputs; centred = both minus the FP32 mean embedding (the input-dependent part). "
        "Gate: the export-time accuracy gate recorded in the manifest.",
    ]


def best_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per modality: the fastest non-baseline row at batch 1 and its speed-up."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["status"] == "ok" and not r["baseline"] and r["batch"] == 1 and r.get("speedup_vs_baseline"):
            if r["modality"] not in best or r["speedup_vs_baseline"] > best[r["modality"]]["speedup_vs_baseline"]:
                best[r["modality"]] = r
    return [f"- Fastest at batch 1, {m}: {r['engine']} {r['precision']} {r['p50_ms']:.3g} ms, "
            f"**{r['speedup_vs_baseline']:.2f}x** vs PyTorch FP32 eager, cos min {r['cos_min']:.4f}"
            for m, r in best.items()]  # fmt: skip


def table_row(r: dict[str, Any]) -> str:
    ratio = "baseline" if r["baseline"] else _num(r.get("speedup_vs_baseline"), "{:.2f}x")
    rss = f"{_num(r.get('peak_rss_mb'), '{:.0f}')} ({_num(r.get('run_rss_mb'), '{:.0f}')})"
    cos = f"{_num(r.get('cos_mean'), '{:.5f}')} / {_num(r.get('cos_min'), '{:.5f}')}"
    cells = [r["modality"], str(r["batch"]), r["engine"], r["precision"], _num(r["p50_ms"], "{:.3g}"),
             _num(r.get("p90_ms"), "{:.3g}"), _num(r.get("p99_ms"), "{:.3g}"),
             _num(r.get("throughput_rows_s"), "{:.1f}"), ratio, rss, _num(r.get("gpu_peak_mb"), "{:.0f}"), cos,
             _num(r.get("centred_cos_mean"), "{:.4f}"), gate_cell(r.get("gate") or {})]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def gate_cell(gate: dict[str, Any]) -> str:
    if not gate:
        return "–"
    parts = [f"cos {gate['cosine_mean']:.4f}" if "cosine_mean" in gate else "",
             f"top-1 {_pct(gate['top1_agreement']):.1f}%" if "top1_agreement" in gate else "",
             "passed" if gate.get("passed") else ("failed" if "passed" in gate else ""),
             "FORCED" if gate.get("forced") else ""]  # fmt: skip
    return ", ".join(p for p in parts if p) or "–"


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def _pct(value: float) -> float:
    return 100 * value if value <= 1 else value
