"""Windowing (runtime.windowing) and window -> encoder input (runtime.window_input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.errors import ConfigError
from runtime.inputs import preprocess_config
from runtime.manifest import load_manifest
from runtime.preprocess import audio, depth, imu, thermal, vision
from runtime.preprocess.resample import resample
from runtime.preprocess.wav import read_wav
from runtime.types import Modality, Samples, StreamInfo, Window
from runtime.window_input import window_to_input, windows_to_batch
from runtime.windowing import NS_PER_S, WindowConfig, Windower
from sensors.sim import generate

RAW = Path(__file__).parent / "fixtures" / "official_tiny" / "raw"
T0_NS = 7_000_000_123
AUDIO_CFG = WindowConfig(32000, 16000, 16000)
IMU_CFG = WindowConfig(2000, 400, 400.0)
CHANNELS = ("ax", "ay", "az", "gx", "gy", "gz")


def _info(modality: Modality, rate_hz: float | None, shape: tuple[int, ...], sid: str = "s") -> StreamInfo:
    return StreamInfo(sid, modality, "si", rate_hz, (), shape, "float32")


def _push_chunks(w: Windower, t: np.ndarray, x: np.ndarray, sizes: list[int] | None = None) -> list[Window]:
    """Push (t, x) in chunks of ``sizes`` (cycled), or all at once."""
    out: list[Window] = []
    i, k = 0, 0
    while i < len(t):
        n = len(t) - i if sizes is None else sizes[k % len(sizes)]
        out += w.push(Samples(w.info.stream_id, w.info.modality, t[i : i + n], x[i : i + n]))
        i, k = i + n, k + 1
    return out


def _imu(rate_hz: float, duration_s: float, seed: int = 0, jitter_ns: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """Jittery host timestamps; channel 0 = seconds since the first sample (linear, so exact after interpolation)."""
    rng = np.random.default_rng(seed)
    n = round(rate_hz * duration_s)
    t = T0_NS + np.round(np.arange(n) * NS_PER_S / rate_hz).astype(np.int64)
    if jitter_ns:
        t[1:] += rng.integers(-jitter_ns, jitter_ns, n - 1)
    x = rng.normal(size=(n, 6))
    x[:, 0] = (t - t[0]) / NS_PER_S
    x[:, 1] = np.sin(2 * np.pi * 1.5 * x[:, 0])
    return t, x


def _audio_times(rate_hz: int, n: int, t0: int = T0_NS) -> np.ndarray:
    return t0 + (np.arange(n, dtype=np.int64) * NS_PER_S) // rate_hz


@pytest.mark.parametrize("rate_hz", [200.0, 1000.0])
def test_imu_hop_exact_over_60_s(rate_hz: float) -> None:
    t, x = _imu(rate_hz, 60.0)
    w = Windower(_info(Modality.IMU, rate_hz, (6,), "imu"), IMU_CFG)
    wins = _push_chunks(w, t, x, [int(rate_hz // 10)])
    span_s = (t[-1] - t[0]) / NS_PER_S
    assert len(wins) == int((span_s - 1999 / 400) // 1.0) + 1 == w.counters["windows"]
    starts = np.array([win.start_ns for win in wins])
    assert starts[0] == t[0]
    assert np.all(np.diff(starts) == NS_PER_S)  # hop 400 samples at 400 Hz, exactly, no drift
    assert all(win.end_ns - win.start_ns == 5 * NS_PER_S for win in wins)
    assert [win.seq for win in wins] == list(range(len(wins)))
    for win in (wins[0], wins[-1]):
        assert win.data.shape == (2000, 6) and win.data.dtype == np.float32
        grid_s = (win.start_ns - t[0]) / NS_PER_S + np.arange(2000) / 400
        np.testing.assert_allclose(win.data[:, 0], grid_s, atol=2e-5)  # timestamps honoured, not indices
        np.testing.assert_allclose(win.data[:, 1], np.sin(2 * np.pi * 1.5 * grid_s), atol=5e-3)
    assert w.counters["gaps"] == 0 and w.counters["partial_windows_discarded"] == 0


def _check_audio_equals_whole(wave: np.ndarray, rate_hz: int, chunk_sizes: list[int]) -> float:
    """Windows of (N, C) ``wave`` vs resampling the whole mono signal; returns the max abs error."""
    w = Windower(_info(Modality.AUDIO, float(rate_hz), (wave.shape[1],), "mic"), AUDIO_CFG)
    wins = _push_chunks(w, _audio_times(rate_hz, len(wave)), wave, chunk_sizes)
    whole = resample(wave.astype(np.float64).mean(axis=1), rate_hz, 16000)
    # every window ending 25 ms (more than the kernel's reach) before the data does, none past it
    assert (len(whole) - 32400) // 16000 + 1 <= len(wins) <= (len(whole) - 32000) // 16000 + 1
    errors = []
    for k, win in enumerate(wins):
        assert win.data.shape == (32000,) and win.data.dtype == np.float32
        assert win.start_ns == T0_NS + k * NS_PER_S and win.end_ns == win.start_ns + 2 * NS_PER_S
        errors.append(np.abs(win.data - whole[16000 * k : 16000 * k + 32000]).max())
    return float(max(errors))


def test_audio_48k_stereo_equals_resampling_the_whole_signal() -> None:
    rng = np.random.default_rng(1)
    n = 48000 * 9 + 77
    wave = (0.3 * rng.standard_normal((n, 2))).clip(-1, 1).astype(np.float32)
    err = _check_audio_equals_whole(wave, 48000, [480, 1, 4096, 333])
    print(f"48 kHz stereo -> 16 kHz window vs whole-signal resample: max abs error {err:.3g}")
    assert err < 1e-6  # same kernel, same phases, same sums: float32 rounding at most


def test_audio_real_44k1_wav_equals_whole_signal() -> None:
    wave, rate = read_wav(RAW / "audio_44k1_stereo.wav")
    err = _check_audio_equals_whole(np.ascontiguousarray(wave.T), rate, [441 * 3 + 5, 1024])
    print(f"audio_44k1_stereo.wav -> 16 kHz windows: max abs error {err:.3g}")
    assert err < 1e-6


def test_1khz_tone_keeps_its_frequency() -> None:
    n = 48000 * 4
    tone = np.sin(2 * np.pi * 1000.0 * np.arange(n) / 48000).astype(np.float32)
    w = Windower(_info(Modality.AUDIO, 48000.0, (2,), "mic"), AUDIO_CFG)
    wins = w.push(Samples("mic", Modality.AUDIO, _audio_times(48000, n), np.stack([tone, tone], axis=1)))
    assert len(wins) == 2
    for win in wins:
        spectrum = np.abs(np.fft.rfft(win.data * np.hanning(len(win.data))))
        peak_hz = np.argmax(spectrum) * 16000 / len(win.data)
        assert abs(peak_hz - 1000.0) <= 0.5  # one FFT bin of a 2 s window
        assert 0.68 < np.sqrt(np.mean(win.data**2)) < 0.73  # amplitude kept (rms of a unit sine)


@pytest.mark.parametrize("modality", [Modality.AUDIO, Modality.IMU])
def test_chunk_boundaries_do_not_matter(modality: Modality) -> None:
    rng = np.random.default_rng(2)
    if modality is Modality.AUDIO:
        n = 44100 * 5
        t, x = _audio_times(44100, n), rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        info, cfg = _info(modality, 44100.0, (2,)), WindowConfig(32000, 4000, 16000)
    else:
        t, x = _imu(250.0, 12.0, seed=3)
        info, cfg = _info(modality, 250.0, (6,)), WindowConfig(2000, 100, 400.0)
    whole = _push_chunks(Windower(info, cfg), t, x)
    sizes = rng.integers(1, 3000, 200).tolist()
    chunked = _push_chunks(Windower(info, cfg), t, x, sizes)
    assert len(whole) == len(chunked) > 10
    for a, b in zip(whole, chunked, strict=True):
        assert (a.seq, a.start_ns, a.end_ns) == (b.seq, b.start_ns, b.end_ns)
        np.testing.assert_array_equal(a.data, b.data)


def _assert_no_window_spans(wins: list[Window], hole_from_ns: int, hole_to_ns: int) -> None:
    for win in wins:
        assert win.end_ns <= hole_from_ns + NS_PER_S // 100 or win.start_ns >= hole_to_ns, (win.start_ns, win.end_ns)


@pytest.mark.parametrize("modality", [Modality.IMU, Modality.AUDIO])
def test_a_one_second_hole_restarts_windowing(modality: Modality) -> None:
    rate = 200.0 if modality is Modality.IMU else 48000.0
    cfg = IMU_CFG if modality is Modality.IMU else AUDIO_CFG
    if modality is Modality.IMU:
        t, x = _imu(rate, 21.0, seed=4, jitter_ns=0)
    else:
        t = _audio_times(48000, 48000 * 21)
        x = np.sin(np.arange(len(t)) / 7.0)[:, None].astype(np.float32)
    cut = round(8.5 * rate)  # 8.5 s of data, then a 1 s hole, then 11.5 s
    keep = np.r_[0:cut, cut + round(rate) : len(t)]
    t, x = t[keep], x[keep]
    w = Windower(_info(modality, rate, x.shape[1:]), cfg)
    wins = _push_chunks(w, t, x, [int(rate // 20)])
    hole_from, hole_to = int(t[cut - 1]), int(t[cut])
    _assert_no_window_spans(wins, hole_from, hole_to)
    after = [win for win in wins if win.start_ns >= hole_to]
    assert after[0].start_ns == hole_to  # the first sample after the gap is the new origin
    assert np.all(np.diff([win.start_ns for win in after]) == cfg.hop_samples * NS_PER_S // int(cfg.sample_rate_hz))
    before = len(wins) - len(after)
    assert before == (4 if modality is Modality.IMU else 7) and len(after) >= 6
    assert [win.seq for win in wins] == list(range(len(wins)))
    assert w.counters["gaps"] == 1 and w.counters["partial_windows_discarded"] == 1
    # the partial window began at the last window's start + hop: 8.5 s - before * hop of native samples
    hop_s = cfg.hop_samples / cfg.sample_rate_hz
    assert abs(w.counters["samples_discarded_at_gap"] - (8.5 - before * hop_s) * rate) <= 1


def test_backwards_time_restarts_and_is_counted() -> None:
    t, x = _imu(400.0, 12.0, jitter_ns=0)
    w = Windower(_info(Modality.IMU, 400.0, (6,)), IMU_CFG)
    first = _push_chunks(w, t[:2800], x[:2800])
    later = _push_chunks(w, t[2800:] - 3 * NS_PER_S, x[2800:])  # the clock jumped back 3 s
    assert len(first) == 3 and w.counters["time_backwards"] == 1 and w.counters["gaps"] == 1
    assert later[0].start_ns == t[2800] - 3 * NS_PER_S


def test_nan_samples_are_dropped_and_split_windows() -> None:
    t, x = _imu(400.0, 20.0, jitter_ns=0)
    x[4000:4010, 2] = np.nan
    x[4005, 4] = np.inf
    w = Windower(_info(Modality.IMU, 400.0, (6,)), IMU_CFG)
    wins = _push_chunks(w, t, x, [37])
    assert w.counters["nan_samples_dropped"] == 10 and w.counters["gaps"] == 1
    _assert_no_window_spans(wins, int(t[3999]), int(t[4010]))
    assert all(np.isfinite(win.data).all() for win in wins)
    assert any(win.start_ns == t[4010] for win in wins)
    mic = Windower(_info(Modality.AUDIO, 16000.0, (1,)), AUDIO_CFG)
    pcm = np.zeros((16000 * 6, 1), np.float32)
    pcm[40000] = np.nan
    wins = mic.push(Samples("s", Modality.AUDIO, _audio_times(16000, len(pcm)), pcm))
    restart_ns = T0_NS + (40001 * NS_PER_S) // 16000  # the sample after the NaN (at 2.5 s)
    assert mic.counters["nan_samples_dropped"] == 1 and mic.counters["partial_windows_discarded"] == 1
    assert [win.start_ns for win in wins] == [T0_NS, restart_ns, restart_ns + NS_PER_S]


def test_audio_timestamps_drifting_from_the_sample_clock_resync() -> None:
    n = 16000 * 12
    t = _audio_times(16000, n)
    t[16000 * 3 :] += NS_PER_S // 5  # two 0.2 s jumps: each below max_gap, together 0.4 s of drift
    t[16000 * 6 :] += NS_PER_S // 5
    w = Windower(_info(Modality.AUDIO, 16000.0, (1,)), AUDIO_CFG)
    wins = _push_chunks(w, t, np.zeros((n, 1), np.float32), [1600])
    assert w.counters["clock_resyncs"] == 1 and w.counters["gaps"] == 1
    before = [win for win in wins if win.end_ns <= t[16000 * 6 - 1]]
    after = [win for win in wins if win.start_ns >= t[16000 * 6]]
    assert len(before) == 5 and len(before) + len(after) == len(wins)
    for win in before:  # sample-clock times stay within max_gap of the timestamps
        assert abs(win.start_ns - t[16000 * win.seq]) <= 0.25 * NS_PER_S
    assert [win.start_ns for win in after] == [t[16000 * 6] + k * NS_PER_S for k in range(len(after))]


def test_frames_every_nth_with_times() -> None:
    rec = generate("obstacle", seed=0, duration_s=3.0, streams=("depth",))
    stream = rec.streams["depth"]
    w = Windower(stream.info, WindowConfig(1, 1, None, frame_stride=3))
    wins = _push_chunks(w, stream.t_ns, stream.values, [4])
    assert len(stream.t_ns) == 30 and len(wins) == 10 and w.counters["frames_skipped"] == 20
    for k, win in enumerate(wins):
        assert win.start_ns == stream.t_ns[3 * k] and win.end_ns == win.start_ns + NS_PER_S // 10
        np.testing.assert_array_equal(win.data, stream.values[3 * k])
    later = w.push(Samples("depth", Modality.DEPTH, stream.t_ns[:2] + 10 * NS_PER_S, stream.values[:2]))
    assert len(later) == 1 and w.counters["gaps"] == 1  # stride restarts after a gap


def test_window_config_from_spec_and_overrides(tiny_bundle: Path) -> None:
    man = load_manifest(tiny_bundle, verify_hashes=False)
    a = WindowConfig.from_spec(man.spec("audio"))
    assert (a.length_samples, a.hop_samples, a.sample_rate_hz) == (32000, 16000, 16000.0)
    i = WindowConfig.from_spec(man.spec("imu"), {"hop_s": 0.5, "max_gap_s": 0.1})
    assert (i.length_samples, i.hop_samples, i.sample_rate_hz, i.max_gap_s) == (2000, 200, 400.0, 0.1)
    d = WindowConfig.from_spec(man.spec("depth"), {"frame_stride": 2})
    assert (d.length_samples, d.sample_rate_hz, d.frame_stride) == (1, None, 2)
    assert WindowConfig.from_spec(man.spec("audio"), {"hop_samples": 8000}).hop_samples == 8000


@pytest.mark.parametrize(
    ("modality", "overrides", "message"),
    [
        ("audio", {"hop": 1.0}, "unknown key 'hop'"),
        ("audio", {"hop_s": 1.0, "hop_samples": 3}, "not both"),
        ("audio", {"hop_s": -1}, "positive number"),
        ("audio", {"hop_samples": 1.5}, "positive integer"),
        ("audio", {"length_s": True}, "positive number"),
        ("audio", {"max_gap_s": "0.2"}, "positive number"),
        ("audio", {"frame_stride": 2}, "frame streams only"),
        ("audio", {"hop_s": 1e-6}, "less than one sample"),
        ("imu", {"length_s": 2.0}, "override hop_s"),
        ("depth", {"length_samples": 2}, "one frame"),
        ("text", {}, "no streaming window"),
    ],
)
def test_bad_overrides_give_one_line_errors(tiny_bundle: Path, modality: str, overrides: dict, message: str) -> None:
    spec = load_manifest(tiny_bundle, verify_hashes=False).spec(modality)
    with pytest.raises(ConfigError, match=message) as info:
        WindowConfig.from_spec(spec, overrides)
    assert "\n" not in str(info.value)


def _sim_windows(modality: Modality, cfg: WindowConfig) -> list[Window]:
    sid = {Modality.VISION: "rgb"}.get(modality, modality.value)
    rec = generate("demo", seed=2, duration_s=6.0, streams=(sid,))
    stream = rec.streams[sid]
    return _push_chunks(Windower(stream.info, cfg), stream.t_ns, stream.values, [1000])


def test_window_to_input_every_modality(tiny_bundle: Path) -> None:
    man = load_manifest(tiny_bundle, verify_hashes=False)
    direct = {
        Modality.AUDIO: audio.clip_to_input,
        Modality.IMU: lambda d, c: imu.preprocess_imu(d, rate_hz=400.0, cfg=c),
        Modality.DEPTH: depth.preprocess_depth,
        Modality.THERMAL: thermal.preprocess_thermal,
        Modality.VISION: lambda d, c: vision.to_clip(vision.preprocess_image(d, c), c.frames),
    }
    for mod, fn in direct.items():
        spec = man.spec(mod)
        wins = _sim_windows(mod, WindowConfig.from_spec(spec))[:2]
        assert wins, mod
        batch = windows_to_batch(wins, spec)
        assert batch.shape == (len(wins), *spec.input.shape[1:]) and batch.dtype == np.float32, mod
        cfg = preprocess_config(mod, spec.preprocess)
        for win, row in zip(wins, batch, strict=True):
            np.testing.assert_array_equal(window_to_input(win, spec), row)
            np.testing.assert_array_equal(row, fn(win.data, cfg))
    with pytest.raises(ValueError, match="cannot feed"):
        window_to_input(wins[0], man.spec("depth"))
