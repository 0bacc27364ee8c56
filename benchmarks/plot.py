"""``python -m benchmarks.plot RESULT.json``: a PNG chart beside an encoder-latency report.

Bars of p50 latency per modality for the PyTorch FP32 baseline and each candidate
engine measured in the same run, on a log scale (vision and IMU differ by 30x).
matplotlib is imported inside :func:`plot_encoders` (the ``plots`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

BASELINE = "pytorch-fp32-eager"


def plot_encoders(result_json: Path) -> Path:
    """Draw ``result_json`` (from ``benchmarks.encoders``) to a PNG with the same stem; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(result_json.read_text())
    rows = [t for t in data["timings"] if t["modality"] != "audio-preprocess"]
    modalities = list(dict.fromkeys(t["modality"] for t in rows))
    engines = list(dict.fromkeys(t["engine"] for t in rows))
    p50 = {(t["modality"], t["engine"]): t["p50_ms"] for t in rows}
    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    width = 0.8 / len(engines)
    for i, engine in enumerate(engines):
        xs = [m + (i - (len(engines) - 1) / 2) * width for m in range(len(modalities))]
        ys = [p50.get((mod, engine), float("nan")) for mod in modalities]
        ax.bar(xs, ys, width, label=engine)
        for x, y, mod in zip(xs, ys, modalities, strict=True):
            base = p50.get((mod, BASELINE))
            if engine != BASELINE and base:
                ax.annotate(f"{base / y:.2f}x", (x, y), ha="center", va="bottom", fontsize=7)
    meta = data["meta"]
    ax.set_xticks(range(len(modalities)), modalities)
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency, batch 1 (ms, log)")
    ax.set_title(f"{meta['model']} encoders, {meta['cpu']}, {meta['threads']} threads ({meta['date']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = result_json.with_suffix(".png")
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Plot each given result file; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path, help="encoders-*.json files")
    args = p.parse_args(argv)
    for path in args.results:
        print(plot_encoders(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
