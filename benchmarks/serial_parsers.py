"""``python -m benchmarks.serial_parsers``: CPU cost of each serial IMU parser, and loss at 1 kHz over a pty.

Parsers are fed clean frames one sample per call (worst case: every read returns one frame) and 64
per call; cost is µs per sample and % of one core at 1 kHz. Then each protocol streams through a real
pseudo-terminal into ``serial://`` at 1 kHz. Writes ``benchmarks/results/serial-parsers-<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import platform
import pty
import struct
import sys
import threading
import time
import tty
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import save_report
from runtime.sources import open_source
from sensors.imu_mavlink import MavlinkConfig, MavlinkParser
from sensors.imu_protocols import Bno08xRvcParser, CsvConfig, CsvParser, WitmotionParser

RESULTS = Path(__file__).resolve().parent / "results"


def _wit(kind: int, a: int, b: int, c: int) -> bytes:
    body = bytes([0x55, kind]) + struct.pack("<4h", a, b, c, 0)
    return body + bytes([sum(body) & 0xFF])


def _rvc(k: int) -> bytes:
    body = bytes([0xAA, 0xAA, k % 256]) + struct.pack("<6h", k % 3000, 2, 3, 4, 5, 1000) + b"\0\0\0"
    return body + bytes([sum(body[2:]) & 0xFF])


def sample_bytes(protocol: str, n: int) -> list[bytes]:
    """``n`` clean encoded samples of ``protocol`` (one bytes object per sample)."""
    if protocol == "csv":
        return [f"{k * 1000},0.0123,-0.456,9.8066,0.001,-0.002,0.0031\r\n".encode() for k in range(n)]
    if protocol == "witmotion":
        return [_wit(0x51, k % 30000, 0, 2048) + _wit(0x52, 1, 2, 3) for k in range(n)]
    if protocol == "bno08x-rvc":
        return [_rvc(k) for k in range(n)]
    from sensors.imu_mavlink import import_mavlink_dialect

    mav = import_mavlink_dialect()
    enc = mav.MAVLink(None, srcSystem=1, srcComponent=1)
    return [
        mav.MAVLink_highres_imu_message(
            k * 1000, 0.1, 0.2, 9.8, 0.01, 0.02, 0.03, 0, 0, 0, 1013.0, 0, 0, 25.0, 0x3F, 0
        ).pack(enc)
        for k in range(n)
    ]


PARSERS: dict[str, tuple[Callable[[], Any], str]] = {
    "csv": (
        lambda: CsvParser(CsvConfig(("t_us", "ax", "ay", "az", "gx", "gy", "gz"))),
        "protocol=csv&columns=t_us,ax,ay,az,gx,gy,gz",
    ),
    "witmotion": (WitmotionParser, "protocol=witmotion"),
    "bno08x-rvc": (Bno08xRvcParser, "protocol=bno08x-rvc"),
    "mavlink": (lambda: MavlinkParser(MavlinkConfig()), "protocol=mavlink"),
}


def parser_cost(protocol: str, n: int, per_call: int, repeats: int) -> float:
    """Best-of-``repeats`` µs per sample when feeding ``per_call`` samples per ``feed``."""
    samples = sample_bytes(protocol, n)
    calls = [b"".join(samples[i : i + per_call]) for i in range(0, n, per_call)]
    best_s = float("inf")
    for _ in range(repeats):
        parser = PARSERS[protocol][0]()
        start = time.perf_counter()
        got = sum(len(parser.feed(c)) for c in calls)
        best_s = min(best_s, time.perf_counter() - start)
        assert got == n, (protocol, got)
    return best_s / n * 1e6


def pty_loss(protocol: str, rate_hz: float, duration_s: float) -> dict[str, Any]:
    """Stream ``protocol`` at ``rate_hz`` through a pty into ``serial://``; samples sent vs delivered."""
    master, slave = pty.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    samples = sample_bytes(protocol, round(rate_hz * duration_s))
    try:
        with open_source(f"serial://{os.ttyname(slave)}?{PARSERS[protocol][1]}&rate_hz={rate_hz:g}") as src:

            def write() -> None:
                t0 = time.perf_counter()
                for k, piece in enumerate(samples):
                    os.write(master, piece)
                    while (left := t0 + (k + 1) / rate_hz - time.perf_counter()) > 0:
                        time.sleep(min(left, 0.0005))

            writer = threading.Thread(target=write, daemon=True)
            cpu0, start = time.process_time(), time.perf_counter()
            writer.start()
            got = 0
            while got < len(samples) and time.perf_counter() - start < duration_s + 3:
                chunk = src.read(0.1)
                got += 0 if chunk is None else len(chunk)
            writer.join()
            stats = src.stats()
            cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - start
    finally:
        os.close(master)
        os.close(slave)
    return {
        "sent": len(samples),
        "delivered": got,
        "lost": len(samples) - got,
        "dropped": stats.dropped,
        "process_cpu_pct": round(100 * cpu_s / wall_s, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.serial_parsers", description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pty-s", type=float, default=3.0, help="seconds streamed per protocol at 1 kHz")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rows = []
    for protocol in PARSERS:
        one = parser_cost(protocol, args.samples, 1, args.repeats)
        batch = parser_cost(protocol, args.samples, 64, args.repeats)
        loss = pty_loss(protocol, 1000.0, args.pty_s)
        rows.append(
            {
                "protocol": protocol,
                "us_per_sample_1_per_read": round(one, 2),
                "us_per_sample_64_per_read": round(batch, 2),
                "core_pct_at_1khz": round(one / 10, 2),
                **loss,
            }
        )
        print(rows[-1], file=sys.stderr)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "samples": args.samples,
        "repeats": args.repeats,
        "pty_s": args.pty_s,
    }
    lines = [
        f"# Serial IMU parser cost ({meta['cpu']}, {meta['cores']} cores, {meta['date']})",
        "",
        "µs per sample, best of repeats; `core %` = one-frame-per-read cost × 1000 Hz. pty: clean",
        f"frames at 1 kHz for {args.pty_s:g} s through a real pseudo-terminal into `serial://`",
        "(process CPU includes the writer thread).",
        "",
        "| protocol | µs/sample (1/read) | µs/sample (64/read) | core % at 1 kHz | pty sent | delivered | lost"
        " | process CPU % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['protocol']} | {r['us_per_sample_1_per_read']} | {r['us_per_sample_64_per_read']} | "
        f"{r['core_pct_at_1khz']} | {r['sent']} | {r['delivered']} | {r['lost']} | {r['process_cpu_pct']} |"
        for r in rows
    ]
    md = save_report(args.out, f"serial-parsers-{meta['date']}", {"meta": meta, "rows": rows}, lines)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
