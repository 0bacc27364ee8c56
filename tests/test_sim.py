"""The synthetic world ``sim://``: determinism, units, time alignment of event signatures, pacing, errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from numpy.typing import NDArray

from runtime.errors import ConfigError
from runtime.sources import SampleSource, open_source
from runtime.types import Modality, Samples
from sensors.sim import SimRecording, SimSource, generate
from sensors.sim_world import EVENT_CLASSES, SCENARIOS, Event, caption_at

G = 9.80665
RATES = {"imu": 400, "audio": 16000, "depth": 10, "thermal": 9, "rgb": 2, "caption": 1}


@pytest.fixture(scope="module")
def demo() -> SimRecording:
    return generate("demo", seed=7)


def _event(rec: SimRecording, label: str) -> Event:
    return next(e for e in rec.timeline if e.label == label)


def _span(rec: SimRecording, sid: str, t0_s: float, t1_s: float) -> NDArray[np.generic]:
    rate = RATES[sid]
    return rec.streams[sid].values[int(np.ceil(t0_s * rate - 1e-9)) : int(np.ceil(t1_s * rate - 1e-9))]


def test_same_seed_is_bit_identical_and_other_seeds_differ() -> None:
    a, b, c = generate("demo", 3, 6.0), generate("demo", 3, 6.0), generate("demo", 4, 6.0)
    assert a.timeline == b.timeline
    for sid in RATES:
        assert a.streams[sid].values.tobytes() == b.streams[sid].values.tobytes(), sid
        np.testing.assert_array_equal(a.streams[sid].t_ns, b.streams[sid].t_ns)
        if sid != "caption":
            assert not np.array_equal(a.streams[sid].values, c.streams[sid].values), sid
    r1, r2 = generate("random", 1, 30.0, ("caption",)), generate("random", 2, 30.0, ("caption",))
    assert [e.label for e in r1.timeline] != [e.label for e in r2.timeline]
    assert r1.timeline == generate("random", 1, 30.0, ("caption",)).timeline


def test_streams_have_units_shapes_dtypes_and_exact_counts() -> None:
    rec = generate("walking", 0, 3.0)
    want = {"imu": ("m/s^2,rad/s", Modality.IMU, (6,), np.float32), "audio": ("pcm", Modality.AUDIO, (1,), np.float32),
            "depth": ("m", Modality.DEPTH, (240, 320), np.float32),
            "thermal": ("K", Modality.THERMAL, (120, 160), np.float32),
            "rgb": ("rgb8", Modality.VISION, (240, 320, 3), np.uint8),
            "caption": ("text", Modality.TEXT, (), np.str_)}  # fmt: skip
    for sid, (units, modality, shape, dtype) in want.items():
        s = rec.streams[sid]
        assert (s.info.units, s.info.modality, s.info.sample_shape) == (units, modality, shape)
        assert s.info.rate_hz == RATES[sid] and np.dtype(s.info.dtype) == s.values.dtype
        assert s.values.shape == (RATES[sid] * 3, *shape) and s.values.dtype.type is dtype
        assert s.t_ns.dtype == np.int64 and s.t_ns[0] == 0
        np.testing.assert_array_equal(np.diff(s.t_ns) // 1000, np.full(len(s.t_ns) - 1, 10**6 // RATES[sid]))
    audio = rec.streams["audio"].values
    assert np.abs(audio).max() <= 1.0 and np.allclose(audio * 32767, np.round(audio * 32767), atol=1e-3)


def test_sensor_models_at_rest() -> None:
    rec = generate("empty", 5, 10.0)
    ev = _event(rec, "empty")
    imu = _span(rec, "imu", ev.start_s, ev.end_s).astype(np.float64)
    assert abs(np.linalg.norm(imu[:, :3].mean(axis=0)) - G) < 0.2  # gravity included
    assert 0.005 < imu[:, 2].std() < 0.1 and np.abs(imu[:, 3:].mean(axis=0)).max() < 0.03
    depth = rec.streams["depth"].values
    valid = depth[depth > 0]
    assert 0.005 < (depth == 0).mean() < 0.1 and valid.min() >= 0.2 and valid.max() <= 6.0
    assert np.allclose(valid * 1000, np.round(valid * 1000), atol=2e-3)  # millimetre steps
    wall = rec.streams["thermal"].values[:, 30:45, 60:100].astype(np.float64)
    assert abs(np.median(wall) - 295.15) < 0.3
    netd_k = np.diff(wall, axis=0).std() / np.sqrt(2)
    assert 0.04 < netd_k < 0.07
    audio = rec.streams["audio"].values[:, 0]
    assert 1e-4 < audio.std() < 2e-3  # a noise floor, not silence


def test_demo_has_every_class_and_captions_follow_the_timeline(demo: SimRecording) -> None:
    labels = {e.label for e in demo.timeline}
    assert len(labels) >= 10 and labels == {c.label for c in EVENT_CLASSES}
    assert all(e.end_s <= demo.duration_s for e in demo.timeline)
    captions = demo.streams["caption"].values
    for n, text in enumerate(captions):
        assert text == caption_at(demo.timeline, float(n))
    fall = _event(demo, "fall")
    assert "a person falls down" in captions[int(np.ceil(fall.start_s)) : int(fall.end_s)]
    assert "a person falls down" not in captions[: int(fall.start_s)]


def test_alarm_energy_near_3khz_only_during_the_alarm(demo: SimRecording) -> None:
    audio = demo.streams["audio"].values[:, 0].astype(np.float64)
    win = 8000
    spec = np.abs(np.fft.rfft(audio[: len(audio) // win * win].reshape(-1, win), axis=1)) ** 2
    freq = np.fft.rfftfreq(win, 1 / 16000)
    band = spec[:, (freq > 2900) & (freq < 3300)].sum(axis=1)
    mid_s = (np.arange(len(band)) + 0.5) * win / 16000
    alarm = _event(demo, "alarm")
    inside = (mid_s > alarm.start_s + 0.3) & (mid_s < alarm.end_s - 0.3)
    outside = (mid_s + 0.25 <= alarm.start_s) | (mid_s - 0.25 >= alarm.end_s)
    assert band[inside].mean() > 100 * np.median(band[outside])
    assert band[inside].max() > 10 * band[outside].max()


def test_fall_imu_freefall_impact_and_lying(demo: SimRecording) -> None:
    fall = _event(demo, "fall")
    acc_g = np.linalg.norm(_span(demo, "imu", fall.start_s, fall.end_s)[:, :3], axis=1) / G
    assert acc_g.max() > 3.0
    assert acc_g[round(0.35 * 400) : round(0.65 * 400)].max() < 0.4  # free fall before the impact
    lying = _span(demo, "imu", fall.start_s + 1.5, fall.end_s)[:, :3].mean(axis=0)
    assert abs(lying[0] - G) < 0.3 and abs(lying[2]) < 0.3  # gravity moved from z to x
    empty = _event(demo, "empty")
    assert (np.linalg.norm(_span(demo, "imu", empty.start_s, empty.end_s)[:, :3], axis=1) / G).max() < 1.2
    audio = _span(demo, "audio", fall.start_s + 0.69, fall.start_s + 0.9)
    assert np.abs(audio).max() > 0.3  # the thud


def test_fire_is_hot_only_while_burning(demo: SimRecording) -> None:
    fire = _event(demo, "fire")
    assert _span(demo, "thermal", fire.start_s, fire.end_s).max() > 400.0
    before = _span(demo, "thermal", 0.0, fire.start_s)
    assert before.max() < 360.0  # people ~306 K, the engine ~341 K


def test_approach_and_obstacle_close_in_depth_and_grow_in_thermal(demo: SimRecording) -> None:
    ap = _event(demo, "approach")
    depth = _span(demo, "depth", ap.start_s, ap.end_s)[:, 100:140, 140:180]
    centre_m = np.array([np.median(f[f > 0]) for f in depth])
    assert centre_m[0] > 4.0 and centre_m[-1] < 1.5 and (np.diff(centre_m) <= 0.05).all()
    warm = (_span(demo, "thermal", ap.start_s, ap.end_s) > 300.0).sum(axis=(1, 2))
    assert warm[-1] > 4 * warm[0] > 0
    ob = _event(demo, "obstacle")
    frames = _span(demo, "depth", ob.start_s, ob.end_s)
    nearest_m = np.array([f[f > 0].min() for f in frames])
    assert nearest_m[0] > 1.0 and nearest_m[-1] < 0.6


def test_source_streams_match_generate_interleaved_in_time(demo: SimRecording) -> None:
    src = SimSource("demo", seed=7, duration_s=4.0, pace="fast", chunk_s=0.25)
    assert isinstance(src, SampleSource) and {s.stream_id for s in src.streams} == set(RATES)
    got: dict[str, list[Samples]] = {}
    last_ns = -1
    with src:
        while True:
            try:
                chunk = src.read(0.1)
            except EOFError:
                break
            assert chunk is not None and chunk.t_ns[-1] >= last_ns  # time order across streams
            last_ns = int(chunk.t_ns[-1])
            got.setdefault(chunk.stream_id, []).append(chunk)
    for sid, chunks in got.items():
        values = np.concatenate([c.values for c in chunks])
        dev_ns = np.concatenate([c.device_t_ns for c in chunks if c.device_t_ns is not None])
        np.testing.assert_array_equal(values, demo.streams[sid].values[: len(values)])
        assert len(values) == RATES[sid] * 4
        np.testing.assert_array_equal(dev_ns, demo.streams[sid].t_ns[: len(values)])
        host_ns = np.concatenate([c.t_ns for c in chunks])
        np.testing.assert_array_equal(host_ns - dev_ns, np.full(len(dev_ns), src.t0_ns))
    assert src.stats().samples == {sid: RATES[sid] * 4 for sid in RATES}
    events = json.loads(src.timeline_json())
    assert events[0]["label"] == "empty" and events[0]["start_ns"] == src.t0_ns + 250_000_000
    with pytest.raises(EOFError):
        src.read(0.1)


def test_realtime_pace_is_honoured() -> None:
    src = open_source("sim://alarm?duration_s=0.5&pace=realtime&streams=imu,audio&chunk_s=0.1")
    start = time.monotonic()
    late_ns: list[int] = []
    with pytest.raises(EOFError):
        while True:
            chunk = src.read(1.0)
            if chunk is not None:
                late_ns.append(time.monotonic_ns() - int(chunk.t_ns[-1]))
    elapsed_s = time.monotonic() - start
    assert 0.35 < elapsed_s < 1.5
    assert min(late_ns) >= 0 and np.median(late_ns) < 50_000_000  # delivered once due, not long after


def test_fast_pace_is_not_paced() -> None:
    # A behaviour check (no pacing sleeps), not a speed claim: benchmarks/sim_speed.py measures speed.
    src = open_source("sim://demo?seed=2&duration_s=6&pace=fast")
    start = time.perf_counter()
    n = 0
    with pytest.raises(EOFError):
        while True:
            n += len(src.read(0.1) or ())
    assert time.perf_counter() - start < 6.0 and n > 6 * 16000


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("sim://nowhere", "unknown sim scenario 'nowhere'; valid: " + ", ".join(SCENARIOS)),
        ("sim://demo?sped=3", "unknown parameter 'sped'; valid: seed ("),
        ("sim://demo?streams=imu,sonar", "unknown sim stream 'sonar'; valid: imu, audio"),
        ("sim://demo?pace=slow", "pace must be realtime|fast"),
        ("sim://demo?seed=x", "parameter seed='x' is not a valid int"),
        ("sim://demo?duration_s=0", "duration_s must be > 0"),
    ],
)
def test_bad_uris_fail_with_one_line_listing_valid_values(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        open_source(uri)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_stream_subset_and_modality_aliases() -> None:
    src = open_source("sim://fire?streams=thermal,text&pace=fast&duration_s=2")
    assert [s.stream_id for s in src.streams] == ["thermal", "caption"]
    first, second = src.read(0.1), src.read(0.1)
    assert first is not None and second is not None  # both due at t = 0: in stream order
    assert (first.stream_id, first.values.dtype.kind) == ("thermal", "f")
    assert (second.stream_id, second.values.dtype.kind, str(second.values[0])) == ("caption", "U", "a quiet room")


def test_runtime_preprocessing_takes_every_stream() -> None:
    from runtime.preprocess.audio import clip_to_input
    from runtime.preprocess.depth import preprocess_depth
    from runtime.preprocess.imu import preprocess_imu
    from runtime.preprocess.thermal import preprocess_thermal
    from runtime.preprocess.vision import preprocess_image

    rec = generate("demo", 1, 6.0)
    assert preprocess_imu(rec.streams["imu"].values, 400.0).shape == (6, 2000)
    assert clip_to_input(rec.streams["audio"].values[:32000, 0]).shape[0] == 1
    assert preprocess_depth(rec.streams["depth"].values[0]).shape == (1, 224, 224)
    assert preprocess_thermal(rec.streams["thermal"].values[0]).shape == (1, 224, 224)
    assert preprocess_image(rec.streams["rgb"].values[0]).shape == (3, 224, 224)


def test_events_cut_to_a_few_samples_by_a_block_edge_still_generate() -> None:
    """Seed 2006 puts a fire (and an engine) across a block edge with fewer samples than the smoothing kernel."""
    rec = generate("random", seed=2006, duration_s=300, streams=("audio",))
    audio = rec.streams["audio"].values
    assert audio.shape[0] == 300 * 16000 and np.all(np.isfinite(audio)) and rec.timeline
