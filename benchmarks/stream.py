"""Streaming benchmark: four concurrent ``sim://`` streams through the pipeline on this machine.

``python -m benchmarks.stream --bundle bundles/demo`` runs two passes with the four
sensor streams as four sources (a thread each):

- **throughput**: ``pace=fast``, lossless; real-time factor = seconds of sensor data
  embedded and matched per wall-clock second (> 1: faster than real time);
- **live**: ``pace=realtime`` for ``--seconds``; per-window capture-to-match latency
  p50/p99 (the sensor-to-decision delay every event inherits), windows dropped.

Also the runtime's peak resident memory and a check that torch was never imported.
Writes ``benchmarks/results/stream-<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.report import save_report
from runtime.embedder import Embedder
from runtime.manifest import load_manifest
from runtime.matching import MatchConfig
from runtime.pipeline import Pipeline, PipelineConfig
from runtime.prompts import load_prompt_file

ROOT = Path(__file__).resolve().parents[1]
STREAMS = ("imu", "audio", "depth", "thermal")


def run_pass(bundle: Path, pace: str, seconds: float, threads: int) -> dict[str, Any]:
    """One pipeline run with the four streams as four sources; returns its figures."""
    manifest = load_manifest(bundle)
    prompts = load_prompt_file(ROOT / "tests" / "fixtures" / "prompts_demo.txt")
    uris = [f"sim://demo?seed={i}&pace={pace}&duration_s={seconds:g}&streams={s}" for i, s in enumerate(STREAMS)]
    from runtime.stream import prompt_bank

    with Embedder(manifest, "ort", max_batch=8, intra_op_threads=threads) as embedder:
        bank = prompt_bank(embedder, prompts)
        cfg = PipelineConfig(threads=threads, lossless=pace == "fast")
        pipeline = Pipeline(manifest, uris, bank, MatchConfig(), cfg, embedder=embedder)
        start = time.perf_counter()
        status = pipeline.run(duration_s=seconds * 20 if pace == "fast" else seconds + 5)
        wall_s = time.perf_counter() - start
    total = status.latency.get("total")
    return {
        "pace": pace,
        "data_s": seconds,
        "wall_s": round(wall_s, 2),
        "real_time_factor": round(seconds / wall_s, 2),
        "windows_done": status.windows_done,
        "windows_dropped": status.windows_dropped,
        "latency_p50_ms": None if total is None else total.p50_ms,
        "latency_p99_ms": None if total is None else total.p99_ms,
        "per_stream_windows": {s.key: s.windows_done for s in status.streams},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run both passes and write the report; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "demo")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of sensor data per pass")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    fast = run_pass(args.bundle, "fast", args.seconds, args.threads)
    live = run_pass(args.bundle, "realtime", args.seconds, args.threads)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "bundle": str(args.bundle.resolve().relative_to(ROOT))
        if args.bundle.resolve().is_relative_to(ROOT)
        else str(args.bundle),
        "model": load_manifest(args.bundle, verify_hashes=False).model_name,
        "throughput": fast,
        "live": live,
        "peak_rss_mb": round(peak_mb, 1),
        "torch_imported": "torch" in sys.modules,
    }
    save_report(args.out, f"stream-{report['date']}", report, _markdown(report).splitlines())
    print(_markdown(report))
    return 0 if not report["torch_imported"] else 1


def _markdown(r: dict[str, Any]) -> str:
    f, live = r["throughput"], r["live"]
    return "\n".join(
        [
            f"# Streaming: four concurrent sim streams ({r['machine']}, {r['date']})",
            "",
            f"Bundle `{r['bundle']}` ({r['model']}); streams {', '.join(STREAMS)}, one source each.",
            "",
            "| figure | value |",
            "|---|---|",
            f"| real-time factor, pace=fast lossless ({f['data_s']:g} s of data) | {f['real_time_factor']}x |",
            f"| windows embedded (fast pass) | {f['windows_done']} |",
            f"| capture-to-match latency per window, live pace, p50 | {live['latency_p50_ms']:.0f} ms |",
            f"| capture-to-match latency per window, live pace, p99 | {live['latency_p99_ms']:.0f} ms |",
            f"| windows dropped, live pace | {live['windows_dropped']} of {live['windows_done']} |",
            f"| peak resident memory of the process | {r['peak_rss_mb']} MB |",
            f"| torch imported | {r['torch_imported']} |",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
