"""serial:// IMU source over real pseudo-terminals at 1 kHz, with injected corruption, plus pure-parser tests."""

from __future__ import annotations

import math
import os
import pty
import struct
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import ConfigError
from runtime.sources import SourceError, open_source
from sensors.arrival_clock import ArrivalClock
from sensors.imu_mavlink import MavlinkConfig, MavlinkParser, import_mavlink_dialect
from sensors.imu_protocols import (
    G_MS2,
    Bno08xRvcParser,
    CsvConfig,
    CsvParser,
    ParsedChunk,
    WitmotionParser,
)

pytest.importorskip("serial", reason="pyserial is not installed (pip install pyserial)")
HEADER_BYTES = {0x55, 0xAA, 0xFD, 0xFE, 0x0A, 0x0D}
GARBAGE = bytes(b for b in range(256) if b not in HEADER_BYTES)
RATE_HZ = 1000
N_SAMPLES = 1200
WIT_ACCEL = 16 * G_MS2 / 32768
WIT_GYRO = 2000 * math.pi / 180 / 32768


class PtyLink:
    """A pty whose slave is reached through a symlink we control, so it can be 'unplugged' and replaced."""

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "imu"
        self.master, self.slave = -1, -1
        self.plug()

    def plug(self) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        tmp_link = self.path.with_suffix(".new")
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(os.ttyname(self.slave))
        os.replace(tmp_link, self.path)

    def unplug(self) -> None:
        os.close(self.master)
        os.close(self.slave)
        self.master = self.slave = -1

    def send(self, pieces: list[bytes], rate_hz: float = RATE_HZ) -> threading.Thread:
        """Write one piece per period from a thread (paced on perf_counter)."""

        def run() -> None:
            t0 = time.perf_counter()
            for k, piece in enumerate(pieces):
                os.write(self.master, piece)
                deadline = t0 + (k + 1) / rate_hz
                while (left := deadline - time.perf_counter()) > 0:
                    time.sleep(min(left, 0.0005))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def link(tmp_path: Path) -> Iterator[PtyLink]:
    lk = PtyLink(tmp_path)
    yield lk
    if lk.master >= 0:
        lk.unplug()


@dataclass
class Script:
    """What the writer sends and what an honest parser must report."""

    pieces: list[bytes] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=list)
    device_t_ns: list[int] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n


def clean_int16(rng: np.random.Generator, n: int) -> list[int]:
    """Random int16 whose bytes are never a header byte (keeps the expected counts exact)."""
    out: list[int] = []
    while len(out) < n:
        v = int(rng.integers(-32768, 32768))
        if not set(struct.pack("<h", v)) & HEADER_BYTES:
            out.append(v)
    return out


def corrupt_script(
    rng: np.random.Generator,
    frames: Callable[[int], tuple[list[bytes], list[float]]],
    kinds: tuple[str, ...],
    passes: Callable[[bytes], bool] = lambda b: False,
    tail_clean: int = 10,
) -> Script:
    """Frames for N_SAMPLES samples, ~12% of them garbage-prefixed, truncated or given a bad checksum.

    ``passes(window)`` says whether bytes starting at a truncated frame would pass the protocol's
    checksum by chance (1 in 256 for 8-bit sums); such cut points are not used, so the expected
    counts stay exact.
    """
    script = Script()
    made = [frames(k) for k in range(N_SAMPLES)]
    after_cut = False
    for k, (parts, values) in enumerate(made):
        kind = "none" if after_cut or k >= N_SAMPLES - tail_clean or rng.random() > 0.12 else str(rng.choice(kinds))
        after_cut = kind == "truncated"
        which = int(rng.integers(len(parts)))
        if kind == "garbage":
            junk = bytes(rng.choice(list(GARBAGE), int(rng.integers(1, 8))).tolist())
            parts[0] = junk + parts[0]
            script.drop("garbage_bytes", len(junk))
        elif kind == "bad_checksum":
            bad = bytearray(parts[which])
            bad[-1] = (bad[-1] + 1) & 0xFF
            bad[-1] = bad[-1] + 1 if bad[-1] in HEADER_BYTES else bad[-1]
            parts[which] = bytes(bad)
        elif kind == "truncated":
            following = b"".join(parts[which + 1 :] + made[k + 1][0])
            cuts = [j for j in range(4, len(parts[which]) - 1) if not passes(parts[which][:j] + following)]
            parts[which] = parts[which][: int(rng.choice(cuts))]
        if kind in ("bad_checksum", "truncated"):
            script.drop(kind)
            if len(parts) == 2:
                script.drop("unpaired")  # witmotion: the partner frame of a lost one
        else:
            script.values.append(values)
            script.device_t_ns.append(k * 1_000_000)
        script.pieces.append(b"".join(parts))
    return script


def wit_frame(kind: int, a: int, b: int, c: int, d: int = 0) -> bytes:
    body = bytes([0x55, kind]) + struct.pack("<4h", a, b, c, d)
    return body + bytes([sum(body) & 0xFF])


def rvc_frame(index: int, ypr: list[int], acc: list[int]) -> bytes:
    body = bytes([0xAA, 0xAA, index]) + struct.pack("<6h", *ypr, *acc) + b"\0\0\0"
    return body + bytes([sum(body[2:]) & 0xFF])


def run_source(link: PtyLink, query: str, script: Script) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """Stream the script through the pty into ``serial://`` and collect everything delivered."""
    with open_source(f"serial://{link.path}?{query}") as src:
        writer = link.send(script.pieces)
        got, deadline = [], time.monotonic() + len(script.pieces) / RATE_HZ + 5.0
        while sum(map(len, got)) < len(script.values) and time.monotonic() < deadline:
            chunk = src.read(0.1)
            if chunk is not None:
                got.append(chunk)
        writer.join()
        time.sleep(0.1)
        extra = src.read(0.05)
        got += [extra] if extra is not None else []
        stats = src.stats()
    assert got, "nothing delivered"
    device = [s.device_t_ns for s in got]
    device_t_ns = None if device[0] is None else np.concatenate(device)  # type: ignore[arg-type]
    return (
        np.concatenate([s.t_ns for s in got]),
        np.concatenate([s.values for s in got]),
        device_t_ns,
        {"dropped": stats.dropped, "samples": stats.samples.get("imu", 0), "errors": stats.errors},
    )


def check_delivery(script: Script, t_ns: np.ndarray, values: np.ndarray, stats: dict) -> None:
    expected = np.array(script.values, dtype=np.float64).astype(np.float32)
    assert values.shape == expected.shape, (values.shape, expected.shape, stats)
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6)
    assert stats["dropped"] == script.drops
    assert stats["samples"] == len(expected) and not stats["errors"]
    assert np.all(np.diff(t_ns) > 0)
    span_s = (t_ns[-1] - t_ns[0]) / 1e9
    assert 0.5 * N_SAMPLES / RATE_HZ < span_s < 2.5 * N_SAMPLES / RATE_HZ


def test_witmotion_1khz_with_corruption(link: PtyLink) -> None:
    rng = np.random.default_rng(1)

    def frames(k: int) -> tuple[list[bytes], list[float]]:
        a, g = clean_int16(rng, 3), clean_int16(rng, 3)
        return [wit_frame(0x51, *a), wit_frame(0x52, *g)], [v * WIT_ACCEL for v in a] + [v * WIT_GYRO for v in g]

    script = corrupt_script(
        rng, frames, ("garbage", "bad_checksum", "truncated"), lambda w: sum(w[:10]) & 0xFF == w[10]
    )
    t_ns, values, device, stats = run_source(link, "protocol=witmotion&baud=921600&rate_hz=1000", script)
    check_delivery(script, t_ns, values, stats)
    assert device is None


def test_bno08x_rvc_1khz_with_corruption(link: PtyLink) -> None:
    rng = np.random.default_rng(2)

    def frames(k: int) -> tuple[list[bytes], list[float]]:
        ypr, acc = clean_int16(rng, 3), clean_int16(rng, 3)
        scale = [G_MS2 / 1000] * 3 + [0.01 * math.pi / 180] * 3
        return [rvc_frame(k % 128, ypr, acc)], [v * s for v, s in zip(acc + ypr, scale, strict=True)]

    script = corrupt_script(
        rng, frames, ("garbage", "bad_checksum", "truncated"), lambda w: sum(w[2:18]) & 0xFF == w[18]
    )
    with open_source(f"serial://{link.path}?protocol=bno08x-rvc&rate_hz=100") as src:
        info = src.streams[0]
    assert info.channels == ("ax", "ay", "az", "yaw", "pitch", "roll") and info.units == "m/s^2,rad"
    t_ns, values, _, stats = run_source(link, "protocol=bno08x-rvc", script)
    check_delivery(script, t_ns, values, stats)


def test_csv_1khz_with_bad_lines(link: PtyLink) -> None:
    rng = np.random.default_rng(3)
    script = Script()
    for k in range(N_SAMPLES):
        vals = [round(float(v), 4) for v in rng.normal(0, 5, 6)]
        line = ",".join([str(k * 1000), *map(str, vals)]) + "\r\n"
        roll = rng.random()
        if roll < 0.05:
            line = "#@!garbage" + line[: int(rng.integers(0, 5))] + "\n"  # a noise line
            script.drop("bad_line")
        elif roll < 0.10:
            line = line[: line.rindex(",")] + "\n"  # cut at a field boundary
            script.drop("bad_line")
        else:
            script.values.append(vals)
            script.device_t_ns.append(k * 1_000_000)
        script.pieces.append(line.encode())
    query = "protocol=csv&columns=t_us,ax,ay,az,gx,gy,gz&accel_unit=m/s2&gyro_unit=rad/s&rate_hz=1000"
    t_ns, values, device, stats = run_source(link, query, script)
    check_delivery(script, t_ns, values, stats)
    assert device is not None and device.tolist() == script.device_t_ns


def test_mavlink_highres_imu_1khz_with_corruption(link: PtyLink) -> None:
    try:
        mav = import_mavlink_dialect()
    except SourceError as exc:
        pytest.skip(str(exc))
    rng = np.random.default_rng(4)
    enc = mav.MAVLink(None, srcSystem=1, srcComponent=1)
    heartbeat = mav.MAVLink_heartbeat_message(2, 3, 0, 0, 4, 3).pack(enc)

    def frames(k: int) -> tuple[list[bytes], list[float]]:
        v = rng.normal(0, 3, 6).astype(np.float32).tolist()
        msg = mav.MAVLink_highres_imu_message(k * 1000, *v, 0, 0, 0, 1013.0, 0, 0, 25.0, 0x3F, 0)
        return [msg.pack(enc)], v

    script = corrupt_script(rng, frames, ("garbage", "bad_checksum", "truncated"))
    for k in range(5, N_SAMPLES - 20, 100):  # an autopilot link carries other messages too
        script.pieces[k] += heartbeat
        script.drop("other_message")
    t_ns, values, device, stats = run_source(link, "protocol=mavlink&baud=921600", script)
    check_delivery(script, t_ns, values, stats)
    assert device is not None and device.tolist() == script.device_t_ns


def test_disconnect_then_recover(link: PtyLink) -> None:
    pieces = [wit_frame(0x51, k, 0, 2048) + wit_frame(0x52, 1, 2, 3) for k in range(200)]
    with open_source(f"serial://{link.path}?protocol=witmotion&rate_hz=1000") as src:
        link.send(pieces).join()
        first = collect(src, 200)
        link.unplug()
        wait_for(lambda: src.stats().errors.get("disconnect", 0) >= 1)
        link.plug()
        wait_for(lambda: src.stats().reconnects >= 1)
        link.send(pieces).join()
        second = collect(src, 200)
        stats = src.stats()
    assert len(first) == len(second) == 200 and second[0] > first[-1]
    assert stats.errors == {"disconnect": 1} and stats.reconnects == 1 and stats.samples["imu"] == 400


def collect(src: object, n: int, timeout_s: float = 5.0) -> list[int]:
    t_ns: list[int] = []
    deadline = time.monotonic() + timeout_s
    while len(t_ns) < n and time.monotonic() < deadline:
        chunk = src.read(0.1)  # type: ignore[attr-defined]
        t_ns += [] if chunk is None else chunk.t_ns.tolist()
    return t_ns


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_busy_missing_and_bad_uris(link: PtyLink) -> None:
    with open_source(f"serial://{link.path}?protocol=csv&rate_hz=100"):
        with pytest.raises(SourceError, match="busy") as busy:
            open_source(f"serial://{link.path}?protocol=csv&rate_hz=100")
    with pytest.raises(SourceError, match="No such file") as missing:
        open_source("serial:///dev/does-not-exist-imu?protocol=witmotion&rate_hz=100")
    with pytest.raises(ConfigError, match="valid: csv, witmotion, bno08x-rvc, mavlink") as proto:
        open_source(f"serial://{link.path}?protocol=nmea")
    with pytest.raises(ConfigError, match=r"unknown parameter 'columns'.*accel_range_g") as param:
        open_source(f"serial://{link.path}?protocol=witmotion&columns=ax")
    with pytest.raises(ConfigError, match="gyro_unit=raw needs"):
        open_source(f"serial://{link.path}?protocol=csv&gyro_unit=raw")
    for exc in (busy, missing, proto, param):
        assert "\n" not in str(exc.value)


def test_missing_pymavlink_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pymavlink", "pymavlink.dialects", "pymavlink.dialects.v20", "pymavlink.dialects.v20.common"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(SourceError, match=r"pip install pymavlink"):
        MavlinkParser(MavlinkConfig())


def feed_all(parser: object, data: bytes, step: int) -> tuple[np.ndarray, dict[str, int]]:
    chunks: list[ParsedChunk] = [parser.feed(data[i : i + step]) for i in range(0, len(data), step)]  # type: ignore[attr-defined]
    drops: dict[str, int] = {}
    for c in chunks:
        for k, v in c.drops.items():
            drops[k] = drops.get(k, 0) + v
    return np.concatenate([c.values for c in chunks]), drops


def test_frames_split_across_reads_parse_the_same() -> None:
    wit = b"".join(wit_frame(0x51, k, -k, 7) + wit_frame(0x53, 1, 1, 1) + wit_frame(0x52, k, 2, 3) for k in range(50))
    rvc = b"".join(rvc_frame(k, [k, 2, 3], [4, 5, -k]) for k in range(50))
    for make, data in ((WitmotionParser, wit), (Bno08xRvcParser, rvc)):
        whole, whole_drops = feed_all(make(), data, len(data))
        for step in (1, 3, 7):
            split, drops = feed_all(make(), data, step)
            assert np.array_equal(split, whole) and drops == whole_drops
        assert len(whole) == 50
    assert whole_drops == {}
    assert feed_all(WitmotionParser(), wit, 5)[1] == {"unused_frame": 50}


def test_witmotion_pairing_and_stray_header() -> None:
    acc, gyr = wit_frame(0x51, 2048, 0, -2048), wit_frame(0x52, 100, 200, 300)
    data = gyr + acc + acc + gyr + b"\x55" + acc + b"\x01\x02" + gyr + wit_frame(0x5F, 1, 2, 3) + acc + gyr
    values, drops = feed_all(WitmotionParser(accel_range_g=2.0), data, 4)
    assert len(values) == 2 and drops == {"unpaired": 4, "garbage_bytes": 3, "unknown_type": 1}
    np.testing.assert_allclose(values[0, :3], [2048 * 2 * G_MS2 / 32768, 0, -2048 * 2 * G_MS2 / 32768], rtol=1e-6)


@pytest.mark.parametrize(
    ("config", "line", "expected"),
    [
        (CsvConfig(), "1,2,3,0.1,0.2,0.3", [1, 2, 3, 0.1, 0.2, 0.3]),
        (
            CsvConfig(("_", "gx", "gy", "gz", "ax", "ay", "az", "t_ms"), "g", "deg/s"),
            "9;180;0;-90;1;0;-1;5",
            [G_MS2, 0, -G_MS2, math.pi, 0, -math.pi / 2],
        ),
        (
            CsvConfig(("ax", "ay", "az", "gx", "gy", "gz"), "raw", "raw", 16384, 131, " "),
            "16384  0 -8192\t131 0 0",
            [G_MS2, 0, -G_MS2 / 2, math.pi / 180, 0, 0],
        ),
    ],
)
def test_csv_column_orders_and_units(config: CsvConfig, line: str, expected: list[float]) -> None:
    if config.columns[0] == "_":
        config = CsvConfig(config.columns, config.accel_unit, config.gyro_unit, delimiter=";")
    chunk = CsvParser(config).feed(line.encode() + b"\r\n")
    np.testing.assert_allclose(chunk.values[0], expected, rtol=1e-6, atol=1e-7)
    assert chunk.drops == {}
    if "t_ms" in config.columns:
        assert chunk.device_t_ns is not None and chunk.device_t_ns.tolist() == [5_000_000]


def test_csv_rejects_bad_lines_and_unwraps_micros() -> None:
    parser = CsvParser(CsvConfig(("t_us", "ax", "ay", "az", "gx", "gy", "gz")))
    lines = [f"{2**32 - 500},0,0,9.8,0,0,0", "1,2", "x,1,2,3,4,5,6", "1,nan,0,0,0,0,0", f"{500},0,0,9.8,0,0,0", ""]
    chunk = parser.feed("\n".join(lines).encode())
    assert chunk.drops == {"bad_line": 3}
    assert chunk.device_t_ns is not None and np.diff(chunk.device_t_ns).tolist() == [1_000_000]


def test_arrival_clock_smooths_bursty_delivery() -> None:
    rng = np.random.default_rng(5)
    true_ns = 1_000_000_000 + np.arange(3000) * 1_000_000  # 1 kHz for 3 s
    clock, stamps = ArrivalClock(), []
    for start in range(0, 3000, 16):  # USB-like 16-sample bursts, 0..4 ms late
        n = min(16, 3000 - start)
        arrival = int(true_ns[start + n - 1] + rng.uniform(0, 4e6))
        stamps.append(clock.stamp(arrival, n))
    t_ns = np.concatenate(stamps)
    assert np.all(np.diff(t_ns) > 0)
    err_ms = (t_ns[1000:] - true_ns[1000:]) / 1e6  # after the first estimate settles
    assert np.abs(err_ms).max() < 0.5, (err_ms.min(), err_ms.max())  # arrivals: 0..19 ms late
    assert np.std(np.diff(t_ns[1000:])) < 0.05e6
    assert clock.rate_hz is not None and abs(clock.rate_hz - 1000) < 1
