"""``python -m benchmarks.plot RESULT.json``: PNG charts beside benchmark reports.

* encoder reports (``benchmarks.encoders``): p50 bars per modality, baseline and candidates.
* latency reports (``benchmarks.latency``): p50 bars per modality and batch with speed-up
  labels, and accuracy (cosine vs PyTorch FP32) against speed-up.

Bars use a log scale (vision and IMU differ by 30x). matplotlib is imported inside the
plotting functions (the ``plots`` extra).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BASELINE = "pytorch-fp32-eager"
LATENCY_BASELINE = "pytorch-eager fp32"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(ax: Any, groups: list[str], series: list[str], p50: dict[tuple[str, str], float],
                 baseline: str) -> None:  # fmt: skip
    """Bars of ``p50[(group, series)]`` per group, each labelled with baseline/bar speed-up."""
    width = 0.8 / max(len(series), 1)
    for i, name in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ys = [p50.get((grp, name), float("nan")) for grp in groups]
        ax.bar(xs, ys, width, label=name)
        for x, y, grp in zip(xs, ys, groups, strict=True):
            base = p50.get((grp, baseline))
            if name != baseline and base and not math.isnan(y):
                ax.annotate(f"{base / y:.2f}x", (x, y), ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_yscale("log")


def plot_encoders(result_json: Path) -> Path:
    """Draw ``result_json`` (from ``benchmarks.encoders``) to a PNG with the same stem; returns its path."""
    plt = _pyplot()
    data = json.loads(result_json.read_text())
    rows = [t for t in data["timings"] if t["modality"] != "audio-preprocess"]
    modalities = list(dict.fromkeys(t["modality"] for t in rows))
    engines = list(dict.fromkeys(t["engine"] for t in rows))
    p50 = {(t["modality"], t["engine"]): t["p50_ms"] for t in rows}
    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    grouped_bars(ax, modalities, engines, p50, BASELINE)
    meta = data["meta"]
    ax.set_ylabel("p50 latency, batch 1 (ms, log)")
    ax.set_title(f"{meta['model']} encoders, {meta['cpu']}, {meta['threads']} threads ({meta['date']})", fontsize=9)
    ax.legend(fontsize=8)
    return _save(plt, fig, result_json.with_suffix(".png"))


def plot_latency(payload: dict[str, Any], out: Path) -> Path:
    """Latency bars (one panel per batch) and an accuracy-vs-speed scatter of a latency report."""
    plt = _pyplot()
    rows = [r for r in payload["rows"] if r["status"] == "ok"]
    batches = sorted({r["batch"] for r in rows}) or [1]
    fig, axes = plt.subplots(1, len(batches) + 1, figsize=(5 * len(batches) + 5, 4.5), dpi=120, squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=False):
        sel = [r for r in rows if r["batch"] == batch]
        groups = list(dict.fromkeys(r["modality"] for r in sel))
        series = list(dict.fromkeys(_label(r) for r in sel))
        grouped_bars(ax, groups, series, {(r["modality"], _label(r)): r["p50_ms"] for r in sel}, LATENCY_BASELINE)
        ax.set_ylabel(f"p50 latency, batch {batch} (ms, log)")
        ax.legend(fontsize=6)
    _scatter(axes[0][-1], [r for r in rows if not r["baseline"] and r.get("speedup_vs_baseline")])
    meta = payload["meta"]
    where = meta.get("gpu", {}).get("name") or f"{meta['cpu']}, {meta['threads']} threads"
    fig.suptitle(f"{meta['model']} encoders vs PyTorch FP32 eager, {where} ({meta['date']})", fontsize=9)
    return _save(plt, fig, out)


def _scatter(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Speed-up (x, log) against 1 - min cosine (y, log, floored at 1e-8; lower is more accurate)."""
    for r in rows:
        point = (r["speedup_vs_baseline"], max(1.0 - r["cos_min"], 1e-8))
        ax.scatter(*point, s=18)
        ax.annotate(f"{r['modality']} {_label(r)} b{r['batch']}", point, fontsize=5)
    ax.axvline(1.0, color="grey", lw=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("speed-up vs PyTorch FP32 eager (same modality, batch)")
    ax.set_ylabel("1 - min cosine vs PyTorch FP32 outputs (log)")


def _label(row: dict[str, Any]) -> str:
    return f"{row['engine']} {row['precision']}"


def _save(plt: Any, fig: Any, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Plot each given result file (encoder or latency report); returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path, help="encoders-*.json or latency-*.json files")
    args = p.parse_args(argv)
    for path in args.results:
        data = json.loads(path.read_text())
        print(plot_latency(data, path.with_suffix(".png")) if "rows" in data else plot_encoders(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
