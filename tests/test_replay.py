"""Recording format, replay pacing and the record -> replay -> record round trip (bit-exact)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import ConfigError, InputError
from runtime.sources import open_source
from runtime.types import Modality, StreamInfo
from sensors.record import main as record_main
from sensors.recording import StreamData, read_recording, write_recording

IMU = StreamInfo("imu", Modality.IMU, "m/s^2,rad/s", 400.0, ("ax", "ay", "az", "gx", "gy", "gz"), (6,), "float32")
THERMAL = StreamInfo("thermal", Modality.THERMAL, "K", 9.0, (), (12, 16), "float32", {"radiometric": True})
CAPTION = StreamInfo("caption", Modality.TEXT, "text", 1.0, (), (), "<U64")


def _streams(seconds: float = 1.0) -> list[StreamData]:
    rng = np.random.default_rng(0)
    t0 = 5_000_000_000
    n_imu, n_th = round(400 * seconds), round(9 * seconds)
    imu_t = t0 + np.arange(n_imu, dtype=np.int64) * 2_500_000
    th_t = t0 + np.arange(n_th, dtype=np.int64) * 111_111_111
    cap_t = t0 + np.arange(round(seconds), dtype=np.int64) * 1_000_000_000
    return [
        StreamData("s0.imu", 0, "sim://x", IMU, imu_t, rng.normal(size=(n_imu, 6)).astype(np.float32),
                   imu_t // 1000, {}),
        StreamData("s0.thermal", 0, "sim://x", THERMAL, th_t, rng.uniform(290, 310, (n_th, 12, 16)).astype(np.float32),
                   None, {}),
        StreamData("s0.caption", 0, "sim://x", CAPTION, cap_t, np.array(["a person walks"] * len(cap_t)), None, {}),
    ]  # fmt: skip


@pytest.fixture()
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "rec.npz"
    write_recording(path, _streams(), [{"label": "walking", "start_s": 0.0, "end_s": 1.0}])
    return path


def test_file_round_trip_keeps_arrays_and_dtypes(recording: Path) -> None:
    streams, timeline = read_recording(recording)
    for got, want in zip(streams, _streams(), strict=True):
        assert got.info == want.info and got.key == want.key
        np.testing.assert_array_equal(got.t_ns, want.t_ns)
        np.testing.assert_array_equal(got.values, want.values)
        assert got.values.dtype == want.values.dtype
        assert (got.device_t_ns is None) == (want.device_t_ns is None)
    assert timeline == [{"label": "walking", "start_s": 0.0, "end_s": 1.0}]
    with np.load(recording, allow_pickle=False) as npz:  # plain arrays, no pickles
        assert "s0.imu.values" in npz.files and str(npz["format"]) == "edgebind-recording-v1"


def test_record_of_a_replay_is_bit_exact(recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "again.npz"
    uri = f"replay://{recording}?pace=fast&timestamps=original&chunk_s=0.05"
    assert record_main([uri, "--seconds", "5", "--out", str(out), "--quiet"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(line)
    assert summary["streams"]["imu"]["samples"] == 400 and summary["ended"] == "eof"
    assert summary["streams"]["imu"]["rate_hz"] == pytest.approx(400.0)
    again, _ = read_recording(out)
    for got, want in zip(again, _streams(), strict=True):
        np.testing.assert_array_equal(got.t_ns, want.t_ns)
        np.testing.assert_array_equal(got.values, want.values)
        if want.device_t_ns is not None:
            np.testing.assert_array_equal(got.device_t_ns, want.device_t_ns)


def test_two_sources_at_once_keep_their_streams_apart(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "two.npz"
    uri = f"replay://{recording}?pace=fast&timestamps=original"
    assert record_main([uri, uri + "&streams=imu", "--seconds", "5", "--out", str(out), "--quiet"]) == 0
    streams, timeline = read_recording(out)
    assert [s.key for s in streams] == ["s0.imu", "s0.thermal", "s0.caption", "s1.imu"]
    np.testing.assert_array_equal(streams[0].values, streams[3].values)
    assert [e["source"] for e in timeline] == [0, 1]  # each replay passes its recording's ground truth on


def test_realtime_pace_and_rebased_clock(recording: Path) -> None:
    with open_source(f"replay://{recording}?streams=imu&chunk_s=0.1") as src:
        start = time.monotonic_ns()
        assert src.read(0.0) is None  # the first 0.1 s of data is not due yet
        total, first = 0, None
        while True:
            try:
                chunk = src.read(0.5)
            except EOFError:
                break
            if chunk is not None:
                first = first if first is not None else chunk.t_ns[0]
                total += len(chunk)
        elapsed_s = (time.monotonic_ns() - start) / 1e9
    assert total == 400
    assert 0.9 <= elapsed_s < 1.6  # one second of data at real-time pace
    assert abs(int(first) - start) < 50_000_000  # rebased onto the replay's start


def test_loop_restarts(recording: Path) -> None:
    with open_source(f"replay://{recording}?pace=fast&loop=true&streams=caption") as src:
        got = [src.read(0.1) for _ in range(3)]
    assert all(g is not None and list(g.values) == ["a person walks"] for g in got)


@pytest.mark.parametrize(
    ("uri", "error", "pattern"),
    [
        ("replay://{dir}/missing.npz", InputError, "no such recording"),
        ("replay://{rec}?speed=2", ConfigError, "unknown parameter 'speed'; valid: pace"),
        ("replay://{rec}?pace=warp", ConfigError, "bad replay parameters"),
        ("replay://{rec}?streams=sonar", ConfigError, "no stream 'sonar' in the recording; it has:"),
        ("tape://{rec}", ConfigError, "unknown source scheme 'tape'; valid: serial://"),
    ],
)
def test_bad_requests(recording: Path, uri: str, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        open_source(uri.format(dir=recording.parent, rec=recording))


def test_foreign_and_truncated_files(tmp_path: Path, recording: Path) -> None:
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError, match="not an edgebind recording"):
        read_recording(tmp_path / "other.npz")
    (tmp_path / "cut.npz").write_bytes(recording.read_bytes()[:500])
    with pytest.raises(InputError, match=r"cut\.npz: not a readable \.npz recording"):
        read_recording(tmp_path / "cut.npz")


def test_unopenable_source_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = record_main(["replay:///nowhere/x.npz", "--seconds", "1", "--out", str(tmp_path / "o.npz")])
    assert code == 2 and "no such recording" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


def test_sim_recording_carries_ground_truth_and_replays_exactly(tmp_path: Path) -> None:
    out, again = tmp_path / "sim.npz", tmp_path / "again.npz"
    sim = "sim://fall?seed=3&duration_s=4&pace=fast&streams=imu,audio,caption"
    assert record_main([sim, "--seconds", "4", "--out", str(out), "--quiet"]) == 0
    streams, timeline = read_recording(out)
    assert {s.info.stream_id for s in streams} == {"imu", "audio", "caption"}
    assert len(streams[0].t_ns) == 4 * 400 and streams[0].info.units == "m/s^2,rad/s"
    assert timeline and all(e["source"] == 0 and e["uri"] == sim for e in timeline)
    assert {"label", "start_s", "end_s"} <= set(timeline[0])
    replay = f"replay://{out}?pace=fast&timestamps=original"
    assert record_main([replay, "--seconds", "4", "--out", str(again), "--quiet"]) == 0
    replayed, timeline_again = read_recording(again)
    assert [(e["label"], e["start_s"]) for e in timeline_again] == [(e["label"], e["start_s"]) for e in timeline]
    for got, want in zip(replayed, streams, strict=True):
        np.testing.assert_array_equal(got.values, want.values)
        np.testing.assert_array_equal(got.t_ns, want.t_ns)
