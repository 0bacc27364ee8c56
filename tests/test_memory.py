"""The embedding memory: retention, restart, exact search, filters, bad stores, the pipeline hook and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime import memory_scan, memory_slots
from runtime.memory import DB_FILE, VEC_FILE, EmbeddingMemory, MemoryStoreError, WindowRecorder
from runtime.search import main as search_main
from runtime.search import parse_when, search_request
from runtime.types import Modality

DEMO = Path(__file__).resolve().parents[1] / "bundles" / "demo"
S = 1_000_000_000
MODS = (Modality.AUDIO, Modality.IMU, Modality.DEPTH, Modality.THERMAL)


class FakeClock:
    def __init__(self, now_ns: int = 1_800_000_000 * S) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def _fill(mem: EmbeddingMemory, n: int, seed: int = 0, t0_ns: int = 1_799_999_000 * S) -> np.ndarray:
    """n windows, one per second from t0, modalities cycling; returns their unit vectors."""
    vecs = np.random.default_rng(seed).standard_normal((n, mem.dim)).astype(np.float32)
    for i, v in enumerate(vecs):
        mod = MODS[i % len(MODS)]
        mem.append(mod.value, mod, i * S, i * S + S, v, source="sim://t", wall_start_ns=t0_ns + i * S)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def test_retention_by_size_reuses_slots(tmp_path: Path) -> None:
    mem = EmbeddingMemory(tmp_path / "m", 8, max_windows=10, commit_every=3, dtype="float16")
    vecs = _fill(mem, 25)
    assert len(mem) == 10 and mem.stats()["evicted_size"] == 15
    assert (tmp_path / "m" / VEC_FILE).stat().st_size == 10 * 8 * 2  # the ring never grows
    np.testing.assert_allclose(mem.vectors(range(16, 26)), vecs[15:], atol=1e-3)
    with pytest.raises(KeyError, match="evicted"):
        mem.vectors([15])
    hits = mem.search(vecs[3], top_k=25)
    assert len(hits) == 10 and {h.id for h in hits} == set(range(16, 26))


def test_retention_by_age(tmp_path: Path) -> None:
    clock = FakeClock()
    t0 = clock.now_ns - 100 * S
    mem = EmbeddingMemory(tmp_path / "m", 8, max_windows=1000, max_age_s=50, clock_ns=clock)
    vecs = _fill(mem, 100, t0_ns=t0)  # windows end at t0+1 s .. t0+100 s = now
    mem.flush()
    assert len(mem) == 51 and mem.stats()["evicted_age"] == 49  # ended before now - 50 s (not at it)
    clock.now_ns += 30 * S
    assert {h.id for h in mem.search(vecs[0], top_k=100)} == set(range(80, 101))
    assert mem.stats()["oldest_ns"] == t0 + 79 * S


def test_restart_keeps_contents_and_ids_are_never_reused(tmp_path: Path) -> None:
    d = tmp_path / "m"
    with EmbeddingMemory(d, 16, max_windows=50, meta={"model_id": "abc"}) as mem:
        vecs = _fill(mem, 70)
        before = [(h.id, round(h.score, 5), h.stream, h.modality, h.start_ns) for h in mem.search(vecs[60], 5)]
        stats = mem.stats()
    with EmbeddingMemory(d) as mem:  # settings come from the store
        assert (mem.dim, mem.capacity, mem.dtype, mem.meta()["model_id"]) == (16, 50, "float32", "abc")
        assert [(h.id, round(h.score, 5), h.stream, h.modality, h.start_ns) for h in mem.search(vecs[60], 5)] == before
        assert mem.stats()["windows"] == stats["windows"] == 50
        assert mem.append("x", "audio", 0, S, vecs[0]) == 71
    with EmbeddingMemory(d, 16, max_windows=50) as mem:
        assert len(mem) == 50 and mem.vectors([71]).shape == (1, 16)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_search_is_exact_top_k_with_filters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    monkeypatch.setattr(memory_scan, "CHUNK_ROWS", 256)  # several chunks, some sparse, some dense
    monkeypatch.setattr(memory_slots, "PART_ROWS", 384)  # time partitions that straddle chunks
    t0 = 1_799_999_000 * S
    mem = EmbeddingMemory(tmp_path / "m", 32, max_windows=3000, dtype=dtype)
    _fill(mem, 3500, seed=1, t0_ns=t0)  # ids 501..3500 live
    ids = np.arange(501, 3501)
    stored = mem.vectors(ids.tolist()).astype(np.float64)  # what the store holds (fp16-rounded)
    starts = t0 + (ids - 1) * S
    mods = np.array([MODS[(i - 1) % 4].value for i in ids])
    rng = np.random.default_rng(7)
    cases = [(None, None, None), (t0 + 1000 * S, t0 + 2500 * S, None), (None, None, "depth"),
             (t0 + 3000 * S, None, ["audio", "imu"]), (t0 + 600 * S, t0 + 700 * S, "thermal")]  # fmt: skip
    for since, until, mod in cases:
        q = rng.standard_normal(32).astype(np.float32)
        keep = np.ones(ids.size, bool)
        if since is not None:
            keep &= starts + S >= since
        if until is not None:
            keep &= starts <= until
        if mod is not None:
            keep &= np.isin(mods, [mod] if isinstance(mod, str) else mod)
        ref = stored[keep] @ (q / np.linalg.norm(q))
        want = ids[keep][np.argsort(-ref, kind="stable")[:10]]
        hits = mem.search(q, 10, since_ns=since, until_ns=until, modality=mod)
        assert [h.id for h in hits] == want.tolist()
        np.testing.assert_allclose([h.score for h in hits], np.sort(ref)[::-1][:10], atol=1e-5)
    assert mem.search(q, 5, modality="vision") == []
    assert all(h.score >= 0.3 for h in mem.search(q, 50, min_score=0.3))


def test_corrupt_or_mismatched_stores_get_one_line_errors(tmp_path: Path) -> None:
    d = tmp_path / "m"
    with pytest.raises(MemoryStoreError, match="no embedding memory"):
        EmbeddingMemory(d)
    with EmbeddingMemory(d, 16, max_windows=20) as mem:
        _fill(mem, 5)
    with pytest.raises(MemoryStoreError, match="holds D=16 vectors but D=64") as e:
        EmbeddingMemory(d, 64)
    assert "\n" not in str(e.value) and "delete" in str(e.value)
    with pytest.raises(MemoryStoreError, match="capacity 20"):
        EmbeddingMemory(d, 16, max_windows=30)
    vec = d / VEC_FILE
    vec.write_bytes(vec.read_bytes()[:100])
    with pytest.raises(MemoryStoreError, match="truncated"):
        EmbeddingMemory(d)
    vec.unlink()
    with pytest.raises(MemoryStoreError, match="missing"):
        EmbeddingMemory(d)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / DB_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MemoryStoreError, match="not a usable memory store") as e:
        EmbeddingMemory(bad, 16)
    assert "delete it" in str(e.value)


def test_search_request_and_times(tmp_path: Path) -> None:
    mem = EmbeddingMemory(tmp_path / "m", 8, max_windows=100)
    vecs = _fill(mem, 20)
    embed = lambda texts: np.stack([vecs[4]] * len(texts))  # noqa: E731
    ok = search_request(mem, embed, {"query": "x", "top": 3, "modality": "audio"})
    assert ok["ok"] and ok["hits"][0]["id"] == 5 and ok["searched"] == 20
    ok = search_request(mem, None, {"vector": vecs[7].tolist(), "top": 1})
    assert ok["hits"][0]["id"] == 8 and "ago_s" in ok["hits"][0]
    for bad in [None, [], {}, {"query": ""}, {"query": "x", "top": 0}, {"query": "x", "top": "3"},
                {"query": "x", "since": "yesterday"}, {"query": "x", "modality": "smell"}, {"vector": [1, 2]},
                {"vector": "abc"}, {"query": "x", "modality": [3]}, {"query": "x", "min_score": "hi"}]:  # fmt: skip
        r = search_request(mem, embed, bad)  # type: ignore[arg-type]
        assert r["ok"] is False and r["error"] and "\n" not in r["error"], bad
    assert search_request(mem, None, {"query": "x"})["ok"] is False
    now = 1_800_000_000 * S
    assert parse_when("10m", now) == now - 600 * S and parse_when("90", now) == now - 90 * S
    assert parse_when("1.5h", now) == now - 5400 * S
    assert parse_when("2026-11-27T23:00:00+00:00", now) == 1_795_820_400 * S


@pytest.fixture(scope="module")
def demo_memory(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A short sim:// run of the four demo streams through bundles/demo, every window stored."""
    from runtime.embedder import Embedder
    from runtime.manifest import load_manifest
    from runtime.matching import MatchConfig
    from runtime.pipeline import Pipeline, PipelineConfig
    from runtime.prompts import load_prompt_file
    from runtime.stream import prompt_bank

    manifest = load_manifest(DEMO)
    d = tmp_path_factory.mktemp("memory") / "mem"
    mem = EmbeddingMemory(d, manifest.embed_dim, 5000, meta={"model_id": manifest.model_id, "bundle": str(DEMO)})
    rec = WindowRecorder(mem)
    uri = "sim://glass_break?pace=fast&streams=audio,imu,thermal,depth&duration_s=12"
    with Embedder(manifest, "ort", max_batch=8) as emb:
        bank = prompt_bank(emb, load_prompt_file(DEMO / "prompts.txt"))
        p = Pipeline(manifest, [uri], bank, MatchConfig(), PipelineConfig(lossless=True), embedder=emb,
                     on_window=rec)  # fmt: skip
        rec.sources.update({key: src for key, src, _ in p.streams})
        source = p.source_objects[0]
        status = p.run(duration_s=60)
    assert status.done and not status.errors
    done = sum(s.windows_done for s in status.streams)
    assert rec.stored == done == len(mem) > 200  # 11 audio + 8 imu + ~120 depth + ~108 thermal
    assert set(mem.stats()["by_modality"]) == {"audio", "imu", "depth", "thermal"}
    mem.close()
    return d, source


def test_pipeline_hook_and_search_cli_end_to_end(demo_memory: tuple[Path, object], capsys: pytest.CaptureFixture,
                                                 ) -> None:  # fmt: skip
    d, source = demo_memory
    (truth,) = source.timeline  # glass_break, audible 2..8 s
    t0 = source.t0_ns
    assert search_main(["--memory", str(d), "glass breaks", "--modality", "audio", "--top", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["searched"] > 200 and len(out["hits"]) == 3
    for h in out["hits"]:  # the best audio windows are the ones with the glass breaking in them
        assert h["modality"] == "audio" and h["source"].startswith("sim://glass_break")
        assert (h["start_mono_ns"] - t0) / S < truth.end_s and (h["end_mono_ns"] - t0) / S > truth.start_s
    assert search_main(["--memory", str(d), "glass breaks", "--since", "10m", "--top", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "score" in lines[0]
    assert search_main(["--memory", str(d), "glass breaks", "--until", "1d"]) == 0
    assert "no match" in capsys.readouterr().out
    assert search_main(["--memory", str(d), "x", "--since", "soon"]) == 2
    assert search_main(["--memory", str(d / "nope"), "x"]) == 2
    err = capsys.readouterr().err
    assert "bad time 'soon'" in err and "no embedding memory" in err


def test_search_cli_with_an_example_clip(demo_memory: tuple[Path, object], tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """``@audio:clip.wav`` (another seed's glass breaking) finds the stored glass-break windows."""
    import wave

    from sensors.sim import generate

    d, source = demo_memory
    (truth,) = source.timeline
    t0 = source.t0_ns
    rec = generate("glass_break", seed=5, duration_s=12, streams=("audio",))
    audio = rec.streams["audio"]
    (event,) = rec.timeline
    rate = 16000
    seg = np.asarray(audio.values, np.float32).reshape(-1)[int(event.start_s * rate) : int(event.end_s * rate)]
    clip = tmp_path / "clip.wav"
    with wave.open(str(clip), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(seg, -1, 1) * 32767).astype("<i2").tobytes())
    assert search_main(["--memory", str(d), f"@audio:{clip}", "--modality", "audio", "--top", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits and all((h["start_mono_ns"] - t0) / S < truth.end_s for h in hits)
    assert all((h["end_mono_ns"] - t0) / S > truth.start_s for h in hits)
    assert search_main(["--memory", str(d), f"@depth:{clip}"]) == 2  # an example of the wrong modality
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "depth" in err and len(err.strip().splitlines()) == 1


def test_a_failing_on_window_hook_is_reported_not_raised() -> None:
    from runtime.manifest import load_manifest
    from runtime.matching import MatchConfig
    from runtime.pipeline import Pipeline, PipelineConfig
    from runtime.prompts import Prompt, PromptBank

    manifest = load_manifest(DEMO)
    seen: list[tuple] = []

    def hook(key: str, mod: Modality, start_ns: int, end_ns: int, vec: np.ndarray) -> None:
        seen.append((key, mod, start_ns, end_ns, vec.shape, vec.dtype))
        raise RuntimeError("disk full")

    bank = PromptBank((Prompt("x", ("x",)),), np.eye(1, manifest.embed_dim, dtype=np.float32), manifest.model_id)
    p = Pipeline(manifest, ["sim://engine?pace=fast&duration_s=4&streams=audio"], bank, MatchConfig(),
                 PipelineConfig(lossless=True), on_window=hook)  # fmt: skip
    status = p.run(duration_s=30)
    assert status.done and status.streams[0].windows_done == 3 == len(seen)
    assert all(s[1] is Modality.AUDIO and s[2] < s[3] and s[4] == (64,) and s[5] == np.float32 for s in seen)
    assert any("on_window: RuntimeError: disk full" in e for e in status.errors)


def test_recorder_counts_windows_it_could_not_store(tmp_path: Path) -> None:
    mem = EmbeddingMemory(tmp_path / "m", 4, max_windows=10)
    rec = WindowRecorder(mem)
    rec("k", Modality.AUDIO, 0, S, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        rec("k", Modality.AUDIO, S, 2 * S, np.array([1, np.nan, 0, 0], np.float32))
    mem.close()
    with pytest.raises(MemoryStoreError, match="is closed"):
        rec("k", Modality.AUDIO, 2 * S, 3 * S, np.ones(4, np.float32))
    with pytest.raises(MemoryStoreError, match="is closed"):
        mem.search(np.ones(4, np.float32))
    assert (rec.stored, rec.failed) == (1, 2)
    with EmbeddingMemory(tmp_path / "m") as again:
        assert len(again) == 1
