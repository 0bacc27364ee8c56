"""``python -m benchmarks.sim_speed``: how many times faster than real time ``sim://`` generates data.

Per stream and all together, through the source at ``pace=fast`` (what a reader gets) and
through :func:`sensors.sim.generate` (whole arrays in memory). Writes
``benchmarks/results/sim-speed-<date>.{json,md}``. numpy + ``runtime`` + ``sensors`` only.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import save_report
from runtime.sources import open_source
from sensors.sim import generate
from sensors.sim_signals import stream_specs

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class SpeedRow:
    """One measurement.

    Attributes:
        path: ``"source"`` (SimSource, pace=fast) or ``"generate"``.
        streams: stream ids made, ``"all"`` for every one.
        data_s: seconds of data made per run.
        best_s: fastest wall time of the runs, seconds.
        median_s: median wall time, seconds.
        x_realtime: data_s / median_s.
    """

    path: str
    streams: str
    data_s: float
    best_s: float
    median_s: float
    x_realtime: float


def _drain(uri: str) -> None:
    src = open_source(uri)
    try:
        while True:
            src.read(1.0)
    except EOFError:
        return


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
    return min(walls), float(np.median(walls))


def measure(scenario: str, duration_s: float, repeats: int) -> list[SpeedRow]:
    """Time every stream alone and all together, through the source and through ``generate``."""
    rows = []
    subsets = [(s.info.stream_id,) for s in stream_specs()] + [()]
    for subset in subsets:
        name = ",".join(subset) or "all"
        query = f"seed=1&duration_s={duration_s:g}&pace=fast" + (f"&streams={name}" if subset else "")
        runs: list[tuple[str, Callable[[], object]]] = [
            ("source", lambda q=query: _drain(f"sim://{scenario}?{q}")),
            ("generate", lambda s=subset: generate(scenario, 1, duration_s, s)),
        ]
        for path, fn in runs:
            best_s, median_s = _time(fn, repeats)
            rows.append(SpeedRow(path, name, duration_s, best_s, median_s, duration_s / median_s))
            print(f"{path:8s} {name:8s} {duration_s / median_s:8.1f}x real time", file=sys.stderr)
    return rows


def write_report(rows: list[SpeedRow], meta: dict[str, Any], out_dir: Path) -> Path:
    """Write the JSON and the Markdown table; returns the .md path."""
    stem = f"sim-speed-{meta['date']}"
    lines = [
        f"# sim:// generation speed ({meta['cpu']}, {meta['cores']} cores, {meta['date']})",
        "",
        f"Scenario `{meta['scenario']}`, {meta['duration_s']:g} s of data, median of {meta['repeats']} runs.",
        "`source`: SimSource at pace=fast, drained chunk by chunk; `generate`: whole arrays in memory.",
        "× real time = seconds of data / wall seconds.",
        "",
        "| streams | source × real time | generate × real time |",
        "|---|---|---|",
    ]
    by_name: dict[str, dict[str, SpeedRow]] = {}
    for r in rows:
        by_name.setdefault(r.streams, {})[r.path] = r
    for name, paths in by_name.items():
        lines.append(f"| {name} | {paths['source'].x_realtime:.1f} | {paths['generate'].x_realtime:.1f} |")
    return save_report(out_dir, stem, {"meta": meta, "rows": [asdict(r) for r in rows]}, lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.sim_speed", description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="demo")
    p.add_argument("--duration-s", type=float, default=60.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rows = measure(args.scenario, args.duration_s, args.repeats)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.node().split(".")[0][:20] or "host",
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "scenario": args.scenario,
        "duration_s": args.duration_s,
        "repeats": args.repeats,
        "numpy": np.__version__,
    }
    md = write_report(rows, meta, args.out)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
