"""Calibration and held-out sets: sim://, replay files, folders and text, made like the runtime makes windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration.sets import (
    TEXT_TEMPLATES,
    build_calibration_set,
    build_held_out_set,
    stratified_pick,
)
from runtime.errors import ConfigError, EdgebindError, InputError
from runtime.manifest import ModelManifest, load_manifest
from runtime.preprocess.wav import write_wav
from runtime.sources import open_source
from runtime.types import Modality
from runtime.window_input import window_to_input
from runtime.windowing import WindowConfig, Windower
from sensors.recording import StreamData, write_recording
from sensors.sim import generate

SIM = "sim://demo?seed=1"


@pytest.fixture(scope="module")
def manifest(tiny_bundle: Path) -> ModelManifest:
    return load_manifest(tiny_bundle)


def _rows_disjoint(a: np.ndarray, b: np.ndarray) -> bool:
    flat_a = {r.tobytes() for r in a.reshape(len(a), -1)}
    return not any(r.tobytes() in flat_a for r in b.reshape(len(b), -1))


@pytest.mark.parametrize("mod", [m.value for m in Modality])
def test_sim_sets_shape_dtype_deterministic_and_disjoint(manifest: ModelManifest, mod: str) -> None:
    spec = manifest.spec(mod)
    a = build_calibration_set(manifest, mod, SIM, 6)
    b = build_calibration_set(manifest, mod, SIM, 6)
    held = build_held_out_set(manifest, mod, SIM, 6)
    assert a.arrays.shape == (6, *spec.input.shape[1:]) and a.arrays.dtype == np.dtype(spec.input.dtype)
    assert held.arrays.shape == a.arrays.shape and held.arrays.dtype == a.arrays.dtype
    assert np.array_equal(a.arrays, b.arrays) and a.info == b.info  # same seed, same rows
    assert _rows_disjoint(a.arrays, held.arrays)
    assert a.info["source"] == SIM and a.info["split"] == "calibration" and held.info["split"] == "held_out"
    assert a.info["scene_seed"] == 1 and held.info["scene_seed"] != 1
    assert np.all(np.isfinite(a.arrays)) if a.arrays.dtype.kind == "f" else True
    other = build_calibration_set(manifest, mod, SIM, 6, seed=5)
    assert other.info["scene_seed"] == 5 and not np.array_equal(other.arrays, a.arrays)


def test_sim_rows_are_the_runtime_windows_spread_over_the_recording(manifest: ModelManifest) -> None:
    spec = manifest.spec("imu")
    got = build_calibration_set(manifest, "imu", SIM, 4)
    # Every row equals one window the runtime's Windower + window_to_input make from the same source.
    src = open_source("sim://demo?seed=1&pace=fast&streams=imu")
    windower = Windower(src.streams[0], WindowConfig.from_spec(spec))
    rows = []
    with src:
        while True:
            try:
                s = src.read(1.0)
            except EOFError:
                break
            rows.extend(window_to_input(w, spec) for w in windower.push(s))
    index = {r.tobytes(): i for i, r in enumerate(rows)}
    picked = [index[r.tobytes()] for r in got.arrays]
    assert len(rows) == got.info["candidates"]
    assert picked == sorted(picked) and picked[-1] > len(rows) // 2 and picked[0] < len(rows) // 4  # spread out
    assert got.info["window"]["hop_samples"] == spec.window["hop_samples"]


def test_sim_lengthens_the_session_for_more_windows(manifest: ModelManifest) -> None:
    got = build_calibration_set(manifest, "imu", SIM, 60)  # 60 s of demo gives 56 IMU windows
    assert len(got) == 60 and "duration_s=" in got.info["resolved"]


def test_stratified_pick_is_seeded_and_spread() -> None:
    a = stratified_pick(1000, 10, np.random.default_rng(3))
    b = stratified_pick(1000, 10, np.random.default_rng(3))
    assert np.array_equal(a, b) and len(set(a.tolist())) == 10
    assert all(100 * i <= x < 100 * (i + 1) for i, x in enumerate(a))
    assert stratified_pick(5, 10, np.random.default_rng(0)).tolist() == [0, 1, 2, 3, 4]


def test_text_from_sim_captions_uses_disjoint_templates(manifest: ModelManifest) -> None:
    cal = build_calibration_set(manifest, "text", SIM, 8)
    held = build_held_out_set(manifest, "text", SIM, 8)
    assert not set(cal.texts) & set(held.texts) and len(cal.texts) == 8
    assert any("falls down" in t for t in cal.texts + held.texts)
    assert set(TEXT_TEMPLATES["calibration"]).isdisjoint(TEXT_TEMPLATES["held_out"])


def test_text_from_a_prompt_file(manifest: ModelManifest, tmp_path: Path) -> None:
    path = tmp_path / "captions.txt"
    lines = [f"caption number {i} about a {w}" for i, w in enumerate(["dog", "cat", "car", "fire"] * 5)]
    path.write_text("# captions\n" + "\n".join(lines) + "\n")
    cal = build_calibration_set(manifest, "text", str(path), 50, seed=2)
    held = build_held_out_set(manifest, "text", str(path), 50, seed=2)
    assert len(cal) + len(held) == len(lines) and not set(cal.texts) & set(held.texts)
    assert cal.arrays.dtype == np.int64 and cal.arrays.shape[1] == 77


def _recording(path: Path, seconds: float) -> Path:
    rec = generate("demo", seed=4, duration_s=seconds, streams=("imu", "thermal"))
    streams = [StreamData(f"s0.{sid}", 0, "sim://demo?seed=4", s.info, s.t_ns, s.values, None, {})
               for sid, s in rec.streams.items()]  # fmt: skip
    write_recording(path, streams, [e.to_dict() for e in rec.timeline])
    return path


def test_replay_file_split_by_time_segments(manifest: ModelManifest, tmp_path: Path) -> None:
    rec = _recording(tmp_path / "rec.npz", 60.0)
    for mod in ("imu", "thermal"):
        cal = build_calibration_set(manifest, mod, f"replay://{rec}", 8, seed=1)
        held = build_held_out_set(manifest, mod, f"replay://{rec}", 8, seed=1)
        again = build_calibration_set(manifest, mod, str(rec), 8, seed=1)  # a bare .npz path works too
        assert cal.arrays.shape == (8, *manifest.spec(mod).input.shape[1:])
        assert np.array_equal(cal.arrays, again.arrays)
        assert _rows_disjoint(cal.arrays, held.arrays)
        assert cal.info["candidates"] + held.info["candidates"] <= (56 if mod == "imu" else 540)
    with pytest.raises(InputError, match="no audio stream"):
        build_calibration_set(manifest, "audio", f"replay://{rec}", 4)


def test_folder_of_files(manifest: ModelManifest, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(12):
        write_wav(tmp_path / f"clip{i:02d}.wav", 0.1 * rng.standard_normal(16000 * 3).astype(np.float32), 16000)
        np.save(tmp_path / f"frame{i:02d}.npy", (290.0 + 10 * rng.random((60, 80))).astype(np.float32))
    audio = build_calibration_set(manifest, "audio", str(tmp_path), 10)
    assert audio.arrays.shape == (10, *manifest.spec("audio").input.shape[1:])
    assert audio.info["files"] >= 1 and audio.info["candidates"] == 3 * audio.info["files"]  # 3 clips a file
    cal = build_calibration_set(manifest, "thermal", str(tmp_path), 20)
    held = build_held_out_set(manifest, "thermal", str(tmp_path), 20)
    assert cal.info["files"] + held.info["files"] == 12 and _rows_disjoint(cal.arrays, held.arrays)
    assert cal.arrays.dtype == np.float32 and cal.arrays.shape[1:] == (1, 224, 224)


@pytest.mark.parametrize(
    ("source", "error", "pattern"),
    [
        ("ftp://host/data", ConfigError, "not replayable"),
        ("/no/such/folder", ConfigError, "no such file or folder"),
        ("sim://nowhere?seed=1", ConfigError, "unknown sim scenario"),
        ("sim://demo?sed=1", ConfigError, "unknown parameter 'sed'"),
    ],
)
def test_bad_sources_give_one_line(manifest: ModelManifest, source: str, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern) as info:
        build_calibration_set(manifest, "imu", source, 4)
    assert "\n" not in str(info.value) and isinstance(info.value, EdgebindError)


def test_bad_arguments(manifest: ModelManifest, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="split"):
        build_calibration_set(manifest, "imu", SIM, 4, split="train")
    with pytest.raises(ConfigError, match="count"):
        build_calibration_set(manifest, "imu", SIM, 0)
    with pytest.raises(InputError, match=r"no \.wav file"):
        build_calibration_set(manifest, "audio", str(tmp_path), 4)
