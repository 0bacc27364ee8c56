"""The streaming engine with real parts: sim:// and replay:// sources, the tiny bundle, ONNX Runtime."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.embedder import Embedder
from runtime.errors import BundleError
from runtime.latency import LatencyRecorder, Reservoir
from runtime.manifest import ModelManifest, load_manifest
from runtime.matching import MatchConfig
from runtime.pipeline import Pipeline, PipelineConfig
from runtime.pipeline_status import PipelineEvent
from runtime.prompts import Prompt, PromptBank, parse_prompt_list
from runtime.sources import Counters, SourceStats
from runtime.stream import prompt_bank
from runtime.types import Modality, Samples, StreamInfo, Window
from runtime.window_queue import Job, WindowQueue

PROMPTS = "a person walks;a person falls down;glass breaks;an engine is running"
ALWAYS = MatchConfig.from_dict({"enter_threshold": -1.0, "exit_threshold": -1.0, "cooldown_s": 0.0})


# -- latency and queue units ---------------------------------------------------------------
def test_reservoir_is_bounded_and_its_percentiles_track_the_stream() -> None:
    r = Reservoir(capacity=500, seed=1)
    for v in range(20_000):
        r.add(float(v))
    s = r.summary()
    assert len(r._values) == 500 and s.count == 20_000 and s.max_ms == 19_999.0
    assert s.mean_ms == pytest.approx(9_999.5)
    assert 8_500 < s.p50_ms < 11_500 and s.p99_ms > 18_500
    empty = LatencyRecorder(("a",)).summary()["a"]
    assert empty.count == 0 and empty.to_dict()["p50_ms"] is None


def _job(key: str, seq: int) -> Job:
    w = Window(key, Modality.DEPTH, seq, seq, seq + 1, np.zeros((2, 2), np.float32))
    return Job(w, key, seq, seq)


def test_queue_drops_oldest_and_counts_per_stream() -> None:
    q, stop = WindowQueue(3), threading.Event()
    for i in range(5):
        q.put(_job("a" if i < 2 else "b", i), block=False, stop=stop)
    assert len(q) == 3 and q.dropped() == {"a": 2}
    got = q.take(10, 0.0, 0.0)
    assert [j.window.seq for j in got] == [2, 3, 4]


def test_queue_blocking_put_waits_for_room_and_stop_releases_it() -> None:
    q, stop = WindowQueue(1), threading.Event()
    q.put(_job("a", 0), block=True, stop=stop)
    results: list[bool] = []
    t = threading.Thread(target=lambda: results.append(q.put(_job("a", 1), block=True, stop=stop)))
    t.start()
    time.sleep(0.1)
    assert t.is_alive() and len(q) == 1
    assert [j.window.seq for j in q.take(1, 0.0, 0.1)] == [0]
    t.join(2)
    assert results == [True] and q.dropped() == {}
    t2 = threading.Thread(target=lambda: results.append(q.put(_job("a", 2), block=True, stop=stop)))
    t2.start()
    stop.set()
    t2.join(2)
    assert results == [True, False]


def test_queue_take_waits_at_most_the_deadline_for_a_full_batch() -> None:
    q, stop = WindowQueue(8), threading.Event()
    q.put(_job("a", 0), block=False, stop=stop)
    t0 = time.monotonic()
    assert len(q.take(4, 0.2, 0.1)) == 1
    assert 0.15 < time.monotonic() - t0 < 1.5
    assert q.take(4, 0.2, 0.05) == []


# -- end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifest(tiny_bundle: Path) -> ModelManifest:
    return load_manifest(tiny_bundle)


@pytest.fixture(scope="module")
def embedder(manifest: ModelManifest) -> Embedder:
    with Embedder(manifest, "ort", max_batch=8) as e:
        yield e


def _pipeline(manifest: ModelManifest, embedder: Embedder, sources: list, **kw: object) -> tuple[Pipeline, list]:
    events: list[PipelineEvent] = []
    match = kw.pop("match", MatchConfig())
    bank = prompt_bank(embedder, parse_prompt_list(PROMPTS))
    cfg = PipelineConfig(**kw)  # type: ignore[arg-type]
    return Pipeline(manifest, sources, bank, match, cfg, on_event=events.append, embedder=embedder), events


def test_sim_end_to_end_embeds_every_window_exactly_once(manifest: ModelManifest, embedder: Embedder) -> None:
    uri = "sim://fall?pace=fast&duration_s=8&streams=imu,audio,thermal,caption"
    p, events = _pipeline(manifest, embedder, [uri], lossless=True, match=ALWAYS)
    status = p.run(duration_s=30)
    assert status.done and not status.errors
    by = {s.key: s for s in status.streams}
    # imu: 5 s windows, 1 s hop over 8 s -> 4; audio: 2 s, 1 s hop -> 7; thermal: one per frame, 9 Hz -> 72
    assert (by["imu"].windows_done, by["audio"].windows_done, by["thermal"].windows_done) == (4, 7, 72)
    assert status.windows_dropped == 0 and status.windows_failed == 0
    assert status.sources[0].ignored == ("caption (text: text streams are not windowed)",)
    assert status.sources[0].finished and status.sources[0].error is None
    total = status.latency["total"]
    assert total.count == 83 and total.p50_ms >= 0 and total.p99_ms >= total.p50_ms
    assert all(status.latency[k].count == 83 for k in ("window", "queue", "preprocess", "embed", "match"))
    assert events and all(e.latency_ms >= 0 and e.match.label in PROMPTS.split(";") for e in events)
    assert {e.match.source_id for e in events} == {"imu", "audio", "thermal"}
    assert all(len(s.top) == 3 for s in status.streams)
    closed = p.closed_events()
    assert closed and all(src == uri for _, src in closed)
    _check_live_view(status)


def _check_live_view(status: object) -> None:
    import io

    from rich.console import Console

    from runtime.live_view import render_status

    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(render_status(status, "tiny"))  # type: ignore[arg-type]
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "thermal" in text and "recent events" in text and "p99" in text and "ignored caption" in text


def test_replay_file_end_to_end(manifest: ModelManifest, embedder: Embedder, tmp_path: Path) -> None:
    from sensors.record import record
    from sensors.recording import write_recording

    streams, timeline, _ = record(["sim://walking?pace=fast&duration_s=6&streams=imu,depth"], 6.0)
    path = tmp_path / "walk.npz"
    write_recording(path, streams, timeline)
    p, _ = _pipeline(manifest, embedder, [f"replay://{path}?pace=fast"], lossless=True)
    status = p.run(duration_s=30)
    by = {s.stream_id: s for s in status.streams}
    n_depth = len(next(s for s in streams if s.info.stream_id == "depth").t_ns)
    assert by["depth"].windows_done == n_depth == 60
    assert by["imu"].windows_done == 2  # 5 s windows, 1 s hop, 6 s of data
    assert status.windows_made == status.windows_done and status.windows_dropped == 0


class DyingImu:
    """A real SampleSource: delivers 0.5 s IMU chunks, then its device 'fails' on read ``fail_at``."""

    def __init__(self, fail_at: int) -> None:
        self.uri = "test://dying-imu"
        self.streams = (StreamInfo("imu", Modality.IMU, "m/s^2,rad/s", 400.0, ("ax", "ay", "az", "gx", "gy", "gz"),
                                   (6,), "float32"),)  # fmt: skip
        self._reads, self._fail_at, self._counters = 0, fail_at, Counters()
        self._t0 = time.monotonic_ns()
        self.closed = False

    def read(self, timeout_s: float) -> Samples | None:
        self._reads += 1
        if self._reads >= self._fail_at:
            raise OSError("device unplugged")
        n0 = (self._reads - 1) * 200
        t = self._t0 + (np.arange(n0, n0 + 200, dtype=np.int64) * 2_500_000)
        self._counters.delivered("imu", 200)
        return Samples("imu", Modality.IMU, t, np.random.default_rng(n0).normal(size=(200, 6)).astype(np.float32))

    def stats(self) -> SourceStats:
        return self._counters.snapshot()

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> DyingImu:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_a_dying_source_is_reported_and_the_others_continue(manifest: ModelManifest, embedder: Embedder) -> None:
    dying = DyingImu(fail_at=13)  # 12 chunks = 6 s of IMU, then an exception
    sim = "sim://engine?pace=fast&duration_s=6&streams=imu,audio"
    p, _ = _pipeline(manifest, embedder, [dying, sim], lossless=True)
    status = p.run(duration_s=30)
    bad, good = status.sources
    assert bad.finished and bad.error == "OSError: device unplugged" and dying.closed
    assert good.finished and good.error is None
    by = {s.key: s for s in status.streams}
    assert by["s0.imu"].windows_done == 2 and by["s1.imu"].windows_done == 2  # same id: keys get s<i>. prefixes
    assert by["audio"].windows_done == 5
    assert any("device unplugged" in e for e in status.errors)


def test_a_source_the_bundle_cannot_embed_fails_before_start(manifest: ModelManifest, embedder: Embedder) -> None:
    audio_only = dataclasses.replace(manifest, modalities={m: s for m, s in manifest.modalities.items()
                                                           if m in (Modality.TEXT, Modality.AUDIO)})  # fmt: skip
    before = threading.active_count()
    with pytest.raises(BundleError) as err:
        _pipeline(audio_only, embedder, ["sim://fall?pace=fast&streams=imu,depth"])
    msg = str(err.value)
    assert "sim://fall?pace=fast&streams=imu,depth" in msg and "imu: imu" in msg and "depth: depth" in msg
    assert "bundle encoders: audio" in msg and "\n" not in msg
    assert threading.active_count() == before


def test_overload_drops_oldest_with_bounded_memory(manifest: ModelManifest, embedder: Embedder) -> None:
    uri = "sim://fire?pace=fast&duration_s=10&streams=depth,thermal"
    p, _ = _pipeline(manifest, embedder, [uri], queue_windows=4, batch_max=2, batch_deadline_s=0.0)
    p.start()
    depths = []
    while not p.wait(0.005):
        depths.append(p.status().queue_depth)
    p.stop()
    status = p.status()
    assert status.windows_dropped > 0 and max(depths) <= 4
    assert status.windows_made == 100 + 90
    assert status.windows_made == status.windows_done + status.windows_dropped + status.windows_failed


def _audio_prompt_bank(manifest: ModelManifest, embedder: Embedder, seed: int) -> PromptBank:
    """Prompts made of example embeddings: alarm windows vs the quiet room (background), one sim seed."""
    from runtime.window_input import windows_to_batch
    from runtime.windowing import WindowConfig, Windower
    from sensors.sim import generate

    rec = generate("alarm", seed=seed, streams=("audio",))
    audio = rec.streams["audio"]
    (event,) = rec.timeline
    spec = manifest.spec(Modality.AUDIO)
    windower = Windower(audio.info, WindowConfig.from_spec(spec))
    windows = windower.push(Samples("audio", Modality.AUDIO, audio.t_ns, audio.values))
    unit = embedder.embed(Modality.AUDIO, windows_to_batch(windows, spec)).unit()
    t0 = int(audio.t_ns[0])
    inside = np.array(
        [event.start_s <= (w.start_ns - t0) / 1e9 and (w.end_ns - t0) / 1e9 <= event.end_s for w in windows]
    )
    outside = np.array(
        [(w.end_ns - t0) / 1e9 <= event.start_s or (w.start_ns - t0) / 1e9 >= event.end_s for w in windows]
    )

    # A random-weight encoder maps every window near one common direction (cosine ~0.99), so
    # the prompts are the discriminating direction between the two example sets and its opposite.
    d = unit[inside].mean(axis=0) - unit[outside].mean(axis=0)
    d = (d / np.linalg.norm(d)).astype(np.float32)
    prompts = (Prompt("alarm", ("example windows",)), Prompt("quiet", ("example windows",), background=True))
    return PromptBank(prompts, np.stack([d, -d]), manifest.model_id)


def test_events_are_found_at_the_right_times(manifest: ModelManifest, embedder: Embedder) -> None:
    """With prompts taken from one seed's example windows, another seed's alarm is detected in its interval.

    The tiny bundle has random weights, so text prompts carry no meaning; example embeddings
    do, and they make the end-to-end timing testable: sim ground truth -> windows -> events.
    """
    bank = _audio_prompt_bank(manifest, embedder, seed=1)
    events: list[PipelineEvent] = []
    uri = "sim://alarm?seed=2&pace=fast&streams=audio"
    match = MatchConfig(enter_threshold=0.0, exit_threshold=0.0, cooldown_s=0.0)
    p = Pipeline(manifest, [uri], bank, match, PipelineConfig(lossless=True), on_event=events.append,
                 embedder=embedder)  # fmt: skip
    source = p.source_objects[0]
    status = p.run(duration_s=60)
    assert status.done and not status.errors
    (truth,) = source.timeline
    t0 = source.t0_ns
    closed = [m for m, _ in p.closed_events() if m.label == "alarm"]
    assert events and closed, "the alarm was not detected"
    for m in closed:  # every detection overlaps the ground-truth alarm ...
        assert (m.start_ns - t0) / 1e9 < truth.end_s and (m.end_ns - t0) / 1e9 > truth.start_s, m
    covered = sum(min((m.end_ns - t0) / 1e9, truth.end_s) - max((m.start_ns - t0) / 1e9, truth.start_s) for m in closed)
    assert covered >= 0.5 * (truth.end_s - truth.start_s)  # ... and together they cover most of it
