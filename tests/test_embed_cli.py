"""``python -m runtime.embed`` end to end against the official embeddings (no torch needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.embed import main
from runtime.preprocess.wav import read_wav, write_wav

ROOT = Path(__file__).resolve().parents[1]
SCALES = {"vision": 1.0, "vision_video": 1.0, "text": 15.788, "audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0}


def _close(got: np.ndarray, golden: np.ndarray, scale: float, cos_min: float = 0.99999, rel: float = 1e-4) -> None:
    assert got.shape == golden.shape and got.dtype == np.float32
    g = golden.astype(np.float64)
    cos = np.sum(got * g, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(g, axis=1)
    assert cos.min() >= cos_min, cos
    assert np.abs(got - g).max() <= rel * scale, np.abs(got - g).max()


def _run(args: list[str]) -> int:
    return main([str(a) for a in args])


def test_vision_files_reproduce_official(tiny_bundle: Path, official_dir: Path, tmp_path: Path) -> None:
    raw = official_dir / "raw"
    out = tmp_path / "v.npy"
    images = [raw / "image_rgb_320x240.png", raw / "image_rgb_180x260.png"]
    assert _run(["--bundle", tiny_bundle, "--modality", "vision", *images, "--out", out]) == 0
    _close(np.load(out), np.load(official_dir / "emb/vision_b2_fp64.npy"), 1.0)


def test_text_strings_reproduce_official(tiny_bundle: Path, official_dir: Path, tmp_path: Path) -> None:
    texts = json.loads((official_dir / "raw/texts.json").read_text())
    out = tmp_path / "t.npy"
    assert _run(["--bundle", tiny_bundle, "--modality", "text", *texts, "--out", out]) == 0
    _close(np.load(out), np.load(official_dir / "emb/text_b4_fp64.npy"), SCALES["text"])
    assert _run(["--bundle", tiny_bundle, "--modality", "text", texts[0], "--out", out]) == 0
    _close(np.load(out), np.load(official_dir / "emb/text_b1_fp64.npy"), SCALES["text"])


def test_audio_wavs_reproduce_official(tiny_bundle: Path, official_dir: Path, tmp_path: Path) -> None:
    raw = official_dir / "raw"
    out = tmp_path / "a.npy"
    wavs = [raw / "audio_16k_mono.wav", raw / "audio_44k1_stereo.wav"]
    assert _run(["--bundle", tiny_bundle, "--modality", "audio", *wavs, "--out", out]) == 0
    # Preprocessing differs from the official float32 pipeline by <= 2e-4 (see test_audio.py).
    _close(np.load(out), np.load(official_dir / "emb/audio_b2_fp64.npy"), 20.0, rel=2e-4)


@pytest.mark.parametrize(
    ("modality", "name", "source"),
    [
        ("audio", "audio", "pre/audio.npy"),
        ("vision", "vision_video", "inputs/vision_video.npy"),
        ("vision", "vision", "pre/vision.npy"),
        ("depth", "depth", "inputs/depth.npy"),
        ("thermal", "thermal", "inputs/thermal.npy"),
        ("imu", "imu", "inputs/imu.npy"),
    ],
)
def test_preprocessed_inputs_reproduce_official(  # noqa: PLR0917 (pytest parametrisation)
    tiny_bundle: Path, official_dir: Path, tmp_path: Path, modality: str, name: str, source: str
) -> None:
    src = official_dir / source
    batch = np.load(src).shape[0]
    out = tmp_path / "e.npy"
    assert _run(["--bundle", tiny_bundle, "--modality", modality, "--preprocessed", src, "--out", out]) == 0
    _close(np.load(out), np.load(official_dir / f"emb/{name}_b{batch}_fp64.npy"), SCALES[name])
    if batch > 1:  # batch 1 equals row 0 of the larger batch
        one = tmp_path / "one.npy"
        np.save(tmp_path / "row0.npy", np.load(src)[:1])
        assert _run(["--bundle", tiny_bundle, "--modality", modality, "--preprocessed", tmp_path / "row0.npy",
                     "--out", one]) == 0  # fmt: skip
        _close(np.load(one), np.load(official_dir / f"emb/{name}_b1_fp64.npy"), SCALES[name])


def test_unit_flag_writes_unit_rows(tiny_bundle: Path, official_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "u.npy"
    src = official_dir / "inputs/depth.npy"
    assert _run(["--bundle", tiny_bundle, "--modality", "depth", "--preprocessed", src, "--out", out, "--unit"]) == 0
    np.testing.assert_allclose(np.linalg.norm(np.load(out), axis=1), 1.0, atol=1e-6)


def test_every_bad_input_is_named_and_nothing_is_written(
    tiny_bundle: Path, official_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = official_dir / "raw/audio_16k_mono.wav"
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(good.read_bytes()[:30])
    garbage = tmp_path / "noise.wav"
    garbage.write_bytes(b"RIFX" + bytes(100))
    out = tmp_path / "never.npy"
    code = _run(["--bundle", tiny_bundle, "--modality", "audio", good, truncated, tmp_path / "gone.wav", garbage,
                 "--out", out])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert any("cut.wav" in line for line in err)
    assert any("gone.wav" in line for line in err)
    assert any("noise.wav" in line for line in err)
    assert err[-1] == "error: 3 of 4 input(s) failed; nothing written"


def test_nan_and_wrong_shape_preprocessed(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = np.zeros((2, 6, 2000), np.float32)
    bad[1, 0, 0] = np.inf
    np.save(tmp_path / "inf.npy", bad)
    assert _run(["--bundle", tiny_bundle, "--modality", "imu", "--preprocessed", tmp_path / "inf.npy",
                 "--out", tmp_path / "o.npy"]) == 2  # fmt: skip
    assert "NaN or Inf" in capsys.readouterr().err
    np.save(tmp_path / "short.npy", np.zeros((2, 6, 1000), np.float32))
    assert _run(["--bundle", tiny_bundle, "--modality", "imu", "--preprocessed", tmp_path / "short.npy",
                 "--out", tmp_path / "o.npy"]) == 2  # fmt: skip
    assert "imu input has shape (2, 6, 1000)" in capsys.readouterr().err
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "short.npy").read_bytes()[:200])
    assert _run(["--bundle", tiny_bundle, "--modality", "imu", "--preprocessed", tmp_path / "trunc.npy",
                 "--out", tmp_path / "o.npy"]) == 2  # fmt: skip
    assert "trunc.npy: not a readable .npy array" in capsys.readouterr().err


def test_corrupt_bundle_and_missing_modality(
    bundle_copy: Path, official_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (bundle_copy / "thermal.fp32.onnx").write_bytes(b"tampered")
    src = official_dir / "inputs/thermal.npy"
    assert _run(["--bundle", bundle_copy, "--modality", "thermal", "--preprocessed", src,
                 "--out", tmp_path / "o.npy"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "thermal.fp32.onnx: SHA-256 does not match the manifest" in err and "\n" not in err
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    del manifest["modalities"]["thermal"]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    assert _run(["--bundle", bundle_copy, "--modality", "thermal", "--preprocessed", src,
                 "--out", tmp_path / "o.npy"]) == 2  # fmt: skip
    assert "has no 'thermal' encoder" in capsys.readouterr().err


def test_python_dash_m_entry_point(tiny_bundle: Path, tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    t = np.arange(48000) / 48000
    write_wav(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 48000)
    assert read_wav(wav)[1] == 48000
    out = tmp_path / "tone.npy"
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.embed", "--bundle", str(tiny_bundle), "--modality", "audio", str(wav),
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert np.load(out).shape == (1, 32)
    assert "wrote" in proc.stderr


def test_embedding_never_imports_torch(tiny_bundle: Path, official_dir: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from runtime.embed import main; "
        f"rc = main(['--bundle', {str(tiny_bundle)!r}, '--modality', 'vision', "
        f"{str(official_dir / 'raw/image_rgb_320x240.png')!r}, '--out', {str(tmp_path / 'v.npy')!r}]); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    cmd = [sys.executable, "-c", code]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


def test_unavailable_execution_provider_is_named(
    tiny_bundle: Path, official_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = official_dir / "inputs/imu.npy"
    code = _run(["--bundle", tiny_bundle, "--modality", "imu", "--preprocessed", src, "--out", tmp_path / "o.npy",
                 "--provider", "NoSuchExecutionProvider"])  # fmt: skip
    assert code == 2
    assert "lacks NoSuchExecutionProvider" in capsys.readouterr().err
