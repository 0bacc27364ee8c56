"""Example prompts on the committed demo bundle: sim clips as prompts, windowed like live streams."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.prompt_examples import embed_example, example_windows
from runtime.prompt_math import ExampleRef, query_vector
from runtime.prompts import PromptError, build_prompt_bank, bundle_text_embed, load_prompt_file, prompt_cache_key
from runtime.types import Modality, Window

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bundles" / "demo"
RATE = 16000
AUDIO_CLASSES = ("alarm", "glass_break", "door_knock", "engine", "speech", "fire")  # classes the sim makes audible
pytestmark = pytest.mark.skipif(not (DEMO / "manifest.json").is_file(), reason="bundles/demo is not built")


@pytest.fixture(scope="module")
def demo() -> Any:
    from runtime.embedder import Embedder
    from runtime.manifest import load_manifest

    manifest = load_manifest(DEMO)
    with Embedder(manifest, threads=1) as embedder:
        yield manifest, embedder


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<class>.wav (whole audio events of seed 1), rec.npz (seed 1 IMU + audio), a depth frame, a fake PNG."""
    from runtime.preprocess.wav import write_wav
    from sensors.recording import StreamData, write_recording
    from sensors.sim import generate

    out = tmp_path_factory.mktemp("examples")
    rec = generate("demo", seed=1, streams=("audio", "imu", "depth"))
    audio = rec.streams["audio"].values[:, 0]
    for ev in rec.timeline:
        if ev.label in AUDIO_CLASSES:
            write_wav(out / f"{ev.label}.wav", audio[round(ev.start_s * RATE) : round(ev.end_s * RATE)], RATE)
    streams = [StreamData(f"s0.{k}", 0, "sim://demo", s.info, s.t_ns, s.values, None, {})
               for k, s in rec.streams.items() if k in ("imu", "audio")]  # fmt: skip
    write_recording(out / "rec.npz", streams, [])
    np.save(out / "depth.npy", rec.streams["depth"].values[len(rec.streams["depth"].values) // 2])
    np.save(out / "fall_imu.npy", rec.streams["imu"].values[round(13.0 * 400) : round(21.0 * 400)])  # 8 s at 400 Hz
    (out / "frame.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return out


def _heldout_audio(seed: int, manifest: Any, embedder: Any) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings of 2 s live-style windows inside every event of another seed, and their labels."""
    from runtime.window_input import windows_to_batch
    from sensors.sim import generate

    rec = generate("demo", seed=seed, streams=("audio",))
    audio = rec.streams["audio"].values[:, 0].astype(np.float32)
    wins, labels = [], []
    for ev in rec.timeline:
        for off in (0.25, 2.25):
            s = round((ev.start_s + off) * RATE)
            wins.append(Window("audio", Modality.AUDIO, len(wins), 0, 0, audio[s : s + 2 * RATE]))
            labels.append(ev.label)
    v = embedder.embed(Modality.AUDIO, windows_to_batch(wins, manifest.spec(Modality.AUDIO))).vectors
    return v / np.linalg.norm(v, axis=1, keepdims=True), np.array(labels)


@pytest.mark.parametrize("seed", [2, 3])
def test_examples_match_their_own_class_on_heldout_sim(demo: Any, examples: Path, seed: int) -> None:
    """A bank of one recorded example per audible class (seed 1) classifies another seed's windows."""
    manifest, embedder = demo
    f = examples / "prompts.txt"
    f.write_text("".join(f"{c}: @audio:{c}.wav\n" for c in AUDIO_CLASSES))
    bank = build_prompt_bank(load_prompt_file(f), bundle_text_embed(embedder), manifest.model_id)
    vectors, labels = _heldout_audio(seed, manifest, embedder)
    cos = bank.cosine(vectors)
    audible = np.isin(labels, AUDIO_CLASSES)
    predicted = np.array(bank.labels)[np.argmax(cos[audible], axis=1)]
    assert np.mean(predicted == labels[audible]) >= 11 / 12, list(zip(labels[audible], predicted, strict=True))
    for label in ("alarm", "engine", "speech"):  # and on average over every class's windows, own class first
        j = bank.labels.index(label)
        own = float(cos[labels == label, j].mean())
        others = {lab: float(cos[labels == lab, j].mean()) for lab in set(labels) - {label}}
        assert own > max(others.values()) + 0.2, (label, own, others)


def test_long_wav_is_windowed_like_a_stream(demo: Any, examples: Path) -> None:
    manifest, embedder = demo
    ref = ExampleRef("audio", "alarm.wav")
    x = example_windows(ref, examples / "alarm.wav", manifest)
    assert x.shape == (3, *manifest.spec(Modality.AUDIO).input.shape[1:])  # 4.5 s: windows at 0, 1, 2 s
    v = embedder.embed(Modality.AUDIO, x).vectors
    mean = (v / np.linalg.norm(v, axis=1, keepdims=True)).mean(axis=0)
    np.testing.assert_allclose(embed_example(ref, examples / "alarm.wav", embedder), mean / np.linalg.norm(mean),
                               atol=1e-6)  # fmt: skip


def test_imu_file_is_windowed_like_a_stream(demo: Any, examples: Path) -> None:
    from runtime.window_input import windows_to_batch

    manifest, _ = demo
    x = example_windows(ExampleRef("imu", "fall_imu.npy"), examples / "fall_imu.npy", manifest)
    assert x.shape == (4, 6, 2000)  # 8 s: 5 s windows at 0, 1, 2, 3 s
    data = np.load(examples / "fall_imu.npy").astype(np.float32)
    live = [Window("imu", Modality.IMU, k, 0, 0, data[400 * k : 400 * k + 2000]) for k in range(4)]
    np.testing.assert_allclose(x, windows_to_batch(live, manifest.spec(Modality.IMU)), atol=1e-5)


def test_text_and_examples_mix_in_one_bank(demo: Any, examples: Path) -> None:
    manifest, embedder = demo
    embed_text = bundle_text_embed(embedder)
    f = examples / "mixed.txt"
    f.write_text(
        "glass_break: glass breaks | @audio:glass_break.wav\n"
        "fall [threshold=0.4]: @imu:rec.npz#imu[14.0:20.0]\n"
        'loud: "a smoke alarm is beeping" + 0.5*@audio:rec.npz#audio[35:40] - 0.2*@depth:depth.npy\n'
        "alarm: a smoke alarm is beeping\n!quiet: a quiet room\n"
    )
    prompts = load_prompt_file(f)
    bank = build_prompt_bank(prompts, embed_text, manifest.model_id, examples / "cache")
    assert bank.labels == ("glass_break", "fall", "loud", "alarm", "quiet")
    np.testing.assert_allclose(np.linalg.norm(bank.vectors, axis=1), 1.0, atol=1e-5)
    text = embed_text(["glass breaks"])[0]
    ex = embed_example(ExampleRef("audio", "glass_break.wav"), examples / "glass_break.wav", embedder)
    mean = text / np.linalg.norm(text) + ex
    np.testing.assert_allclose(bank.vectors[0], mean / np.linalg.norm(mean), atol=1e-5)
    # the cached bank comes back without the encoders
    again = build_prompt_bank(prompts, lambda t: pytest.fail("cache miss"), manifest.model_id, examples / "cache")
    np.testing.assert_array_equal(again.vectors, bank.vectors)
    assert len(prompt_cache_key(prompts, manifest.model_id)) == 64
    # search queries use the same grammar
    q = query_vector("glass breaks", manifest, embedder)
    np.testing.assert_allclose(q, text / np.linalg.norm(text), atol=1e-6)
    q2 = query_vector('"glass breaks" + @audio:glass_break.wav', manifest, embedder, base_dir=examples)
    np.testing.assert_allclose(q2, bank.vectors[0], atol=1e-5)


@pytest.mark.parametrize(
    "line, words",
    [
        ("x: @audio:frame.png", "a PNG image is not audio"),
        ("x: @depth:alarm.wav", "is not depth"),
        ("x: @audio:nope.wav", "no such file"),
        ("x: @imu:alarm.npy", "no such file"),
    ],
)
def test_wrong_files_fail_at_parse(examples: Path, line: str, words: str) -> None:
    f = examples / "bad.txt"
    f.write_text(f"ok: fine\n{line}\n")
    with pytest.raises(PromptError) as info:
        load_prompt_file(f)
    assert f"{f}:2:" in str(info.value) and words in str(info.value) and "\n" not in str(info.value)


def test_renamed_file_is_caught(examples: Path) -> None:
    (examples / "fake.wav").write_bytes((examples / "frame.png").read_bytes())
    f = examples / "fake.txt"
    f.write_text("x: @audio:fake.wav\n")
    with pytest.raises(PromptError, match=r"fake\.wav is a PNG image, not a WAV"):
        load_prompt_file(f)


@pytest.mark.parametrize(
    "line, words",
    [
        ("x: @imu:rec.npz#imu[100:110]", "empty segment"),
        ("x: @imu:rec.npz#imu[14:16]", "shorter than one imu window"),
        ("x: @imu:rec.npz#audio[1:9]", "stream 'audio' is audio, not imu"),
        ("x: @depth:rec.npz", "0 depth streams"),
        ("x: @imu:rec.npz#gps[1:9]", "no stream 'gps'"),
    ],
)
def test_bad_segments_fail_at_build(demo: Any, examples: Path, line: str, words: str) -> None:
    manifest, embedder = demo
    f = examples / "seg.txt"
    f.write_text(f"ok: fine\n{line}\n")
    with pytest.raises(PromptError) as info:
        build_prompt_bank(load_prompt_file(f), bundle_text_embed(embedder), manifest.model_id)
    assert f"{f}:2:" in str(info.value) and words in str(info.value) and "\n" not in str(info.value)


def test_bundle_without_the_modality(demo: Any, examples: Path) -> None:
    manifest, _ = demo
    no_audio = dataclasses.replace(manifest, modalities={m: s for m, s in manifest.modalities.items()
                                                         if m is not Modality.AUDIO})  # fmt: skip
    with pytest.raises(InputError, match="the bundle has no audio encoder"):
        example_windows(ExampleRef("audio", "alarm.wav"), examples / "alarm.wav", no_audio)
