"""Audio preprocessing: WAV reading, resampling, Kaldi fbank and the official per-file pipeline."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import ConfigError, InputError
from runtime.preprocess.audio import (
    AudioPreprocess,
    clip_ranges,
    clip_to_input,
    file_to_clips,
    load_audio_file,
)
from runtime.preprocess.fbank import FbankConfig, kaldi_fbank
from runtime.preprocess.resample import resample
from runtime.preprocess.wav import read_wav, write_wav

FILES = ("audio_16k_mono", "audio_44k1_stereo")


def _wav_bytes(
    payload: bytes,
    *,
    code: int = 1,
    channels: int = 1,
    rate_hz: int = 16000,
    bits: int = 16,
    extensible: bool = False,
    extra_chunks: bytes = b"",
    data_size: int | None = None,
) -> bytes:
    """Hand-built RIFF/WAVE bytes (independent of write_wav)."""
    block = channels * bits // 8
    tag = 0xFFFE if extensible else code
    fmt = struct.pack("<HHIIHH", tag, channels, rate_hz, rate_hz * block, block, bits)
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", code) + guid_tail
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunks
    size = len(payload) if data_size is None else data_size
    body += b"data" + struct.pack("<I", size) + payload + (b"\x00" if len(payload) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------- goldens


@pytest.mark.parametrize("row,name", list(enumerate(FILES)))
def test_official_audio_golden(official_dir: Path, row: int, name: str) -> None:
    golden = np.load(official_dir / "pre" / "audio.npy")[row]
    got = load_audio_file(official_dir / "raw" / f"{name}.wav")
    assert got.shape == golden.shape == (3, 1, 128, 204)
    assert got.dtype == np.float32
    err = np.abs(got - golden)
    assert err.max() <= 1e-3 and err.mean() <= 1e-4, (err.max(), err.mean())
    # padded columns are exact zeros before normalisation
    np.testing.assert_allclose(got[..., 198:], (0 + 4.268) / 9.138, atol=1e-6)


@pytest.mark.parametrize("row,name", list(enumerate(FILES)))
def test_noalias_variant_golden(official_dir: Path, row: int, name: str) -> None:
    golden = np.load(official_dir / "pre" / "audio_noalias_variant.npy")[row]
    official = np.load(official_dir / "pre" / "audio.npy")[row]
    got = load_audio_file(official_dir / "raw" / f"{name}.wav", AudioPreprocess(official_inplace_mean=False))
    err = np.abs(got - golden)
    assert err.max() <= 1e-3 and err.mean() <= 1e-4, (err.max(), err.mean())
    # the quirk matters: the official output differs visibly from the variant
    assert np.abs(official - golden).max() > 0.05


def test_resample_golden(official_dir: Path) -> None:
    golden = np.load(official_dir / "pre" / "audio_44k1_resampled_16k.npy")
    wave, rate_hz = read_wav(official_dir / "raw" / "audio_44k1_stereo.wav")
    got = resample(wave, rate_hz, 16000)
    assert got.shape == golden.shape == (2, 68800)
    assert got.dtype == np.float32
    assert np.abs(got - golden).max() <= 1e-5


def test_clip_ranges_match_manifest(official_dir: Path) -> None:
    manifest = json.loads((official_dir / "manifest.json").read_text())
    for name, entry in manifest["audio_clip_sample_ranges"].items():
        expected = [tuple(r) for r in entry["clips_sample_ranges"]]
        assert clip_ranges(entry["samples_16k"]) == expected, name
    assert clip_ranges(68800)[1] == (18399, 50399)  # float rounding, not 18400


def test_clip_ranges_short_and_exact() -> None:
    assert clip_ranges(20000) == [(0, 32000)] * 3  # shorter than a clip: all start at 0
    assert clip_ranges(32000) == [(0, 32000)] * 3
    assert clip_ranges(64000) == [(0, 32000), (16000, 48000), (32000, 64000)]
    assert clip_ranges(64000, AudioPreprocess(clips_per_file=1)) == [(0, 32000)]


def test_wav_reader_matches_pcm16_scaling(official_dir: Path) -> None:
    wave, rate_hz = read_wav(official_dir / "raw" / "audio_16k_mono.wav")
    assert wave.shape == (1, 80000) and rate_hz == 16000 and wave.dtype == np.float32
    ints = np.round(wave.astype(np.float64) * 32768)
    np.testing.assert_array_equal(ints / 32768, wave)  # exactly k / 32768


# ------------------------------------------------------------------- streaming


def test_clip_to_input_equals_first_official_clip(official_dir: Path) -> None:
    golden = np.load(official_dir / "pre" / "audio.npy")[0, 0]
    wave, _ = read_wav(official_dir / "raw" / "audio_16k_mono.wav")
    got = clip_to_input(wave[0, :32000])
    assert got.shape == (1, 128, 204) and got.dtype == np.float32
    assert np.abs(got - golden).max() <= 1e-3


def test_clip_to_input_short_and_long_clips() -> None:
    rng = np.random.default_rng(0)
    short = clip_to_input(rng.standard_normal(8000).astype(np.float32) * 0.1)  # 0.5 s -> 48 frames
    np.testing.assert_allclose(short[0, :, 48:], 4.268 / 9.138, atol=1e-6)
    assert not np.allclose(short[0, :, 47], 4.268 / 9.138)
    long = clip_to_input(rng.standard_normal(48000).astype(np.float32) * 0.1)  # 3 s -> cropped
    assert long.shape == (1, 128, 204)


# ---------------------------------------------------------- input protection


def test_caller_array_not_mutated() -> None:
    rng = np.random.default_rng(1)
    wave = (rng.standard_normal((2, 50000)) * 0.1 + 0.2).astype(np.float32)
    before = wave.copy()
    file_to_clips(wave, 16000)
    file_to_clips(wave, 22050)
    clip_to_input(wave[0])
    np.testing.assert_array_equal(wave, before)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected(bad: float) -> None:
    wave = np.zeros((1, 32000), dtype=np.float32)
    wave[0, 100] = bad
    with pytest.raises(InputError, match="NaN or Inf"):
        file_to_clips(wave, 16000)
    with pytest.raises(InputError, match="NaN or Inf"):
        clip_to_input(wave[0])


def test_bad_lengths_and_rates_rejected() -> None:
    with pytest.raises(InputError, match="empty"):
        file_to_clips(np.zeros((1, 0), np.float32), 16000)
    with pytest.raises(InputError, match="shorter than one"):
        file_to_clips(np.zeros((1, 399), np.float32), 16000)
    with pytest.raises(InputError, match="shorter than one"):
        clip_to_input(np.zeros(100, np.float32))
    for rate in (0, -16000, 16000.0, True):
        with pytest.raises(InputError, match="positive integer"):
            file_to_clips(np.zeros((1, 32000), np.float32), rate)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="1-D"):
        clip_to_input(np.zeros((2, 32000), np.float32))
    file_to_clips(np.zeros((1, 400), np.float32), 16000)  # exactly one frame is fine


def test_load_audio_file_prefixes_path(tmp_path: Path) -> None:
    path = tmp_path / "tiny.wav"
    write_wav(path, np.zeros(100, np.float32), 16000)
    with pytest.raises(InputError, match=r"tiny\.wav: .*shorter than one"):
        load_audio_file(path)


# ------------------------------------------------------------------ resampling


def test_resample_shapes_and_validation() -> None:
    x = np.random.default_rng(2).standard_normal((2, 3, 1000)).astype(np.float32)
    y = resample(x, 48000, 16000)
    assert y.shape == (2, 3, 334) and y.dtype == np.float32
    assert resample(x, 16000, 16000) is not x
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)
    assert resample(x[0, 0], 8000, 16000).shape == (2000,)
    for rate in (0, -1, 1.5):
        with pytest.raises(InputError, match="positive integer"):
            resample(x, rate, 16000)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="rolloff"):
        resample(x, 44100, 16000, rolloff=0.0)


def test_resample_tone_amplitude() -> None:
    t = np.arange(44100) / 44100
    y = resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32), 44100, 16000)
    expected = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    assert np.abs(y[200:-200] - expected[200:-200]).max() < 1e-3


# ----------------------------------------------------------------------- fbank


def test_fbank_shape_and_mel_matrix() -> None:
    feats = kaldi_fbank(np.random.default_rng(3).standard_normal(32000).astype(np.float32))
    assert feats.shape == (198, 128) and feats.dtype == np.float32
    silent = kaldi_fbank(np.zeros(400, np.float32))
    np.testing.assert_allclose(silent, math.log(1.1920928955078125e-07), rtol=1e-6)
    with pytest.raises(InputError, match="1-D"):
        kaldi_fbank(np.zeros((1, 400), np.float32))


def _naive_fbank(x: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """Frame-by-frame reference from the Kaldi definitions (float64, index arithmetic, no batching)."""
    n, hop, n_x = 400, 160, len(x)
    if cfg.snip_edges:
        starts = range(0, n_x - n + 1, hop)
    else:
        starts = range(hop // 2 - n // 2, (n_x + hop // 2) // hop * hop + hop // 2 - n // 2, hop)
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    edges = [mel(20.0) + i * (mel(8000.0) - mel(20.0)) / 129 for i in range(130)]
    out = []
    for s in starts:
        idx = [i if 0 <= i < n_x else (-i - 1 if i < 0 else 2 * n_x - 1 - i) for i in range(s, s + n)]
        frame = x[idx].astype(np.float64)
        frame = frame - frame.mean()
        frame = frame - 0.97 * np.concatenate([[frame[0]], frame[:-1]])
        frame = frame * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / (n - 1)))
        power = np.abs(np.fft.fft(frame, 512)[:257]) ** 2
        row = []
        for i in range(128):
            energy = 0.0
            for k in range(256):
                m = mel(k * 31.25)
                w = min(
                    (m - edges[i]) / (edges[i + 1] - edges[i]),
                    (edges[i + 2] - m) / (edges[i + 2] - edges[i + 1]),
                )
                energy += max(w, 0.0) * power[k]
            row.append(math.log(max(energy, 1.1920928955078125e-07)))
        out.append(row)
    return np.array(out)


@pytest.mark.parametrize("snip_edges", [True, False])
def test_fbank_against_naive_reference(snip_edges: bool) -> None:
    x = (np.random.default_rng(6).standard_normal(1000) * 0.2 + 0.1).astype(np.float32)
    cfg = FbankConfig(snip_edges=snip_edges)
    got = kaldi_fbank(x, cfg)
    assert got.shape == ((4, 128) if snip_edges else (6, 128))
    np.testing.assert_allclose(got, _naive_fbank(x, cfg), atol=1e-5, rtol=0)


def test_configs_round_trip() -> None:
    cfg = AudioPreprocess(official_inplace_mean=False, fbank=FbankConfig(num_mel_bins=64))
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["fbank"]["num_mel_bins"] == 64
    assert AudioPreprocess.from_dict(data) == cfg
    assert FbankConfig.from_dict(FbankConfig().to_dict()) == FbankConfig()
    with pytest.raises(ConfigError):
        AudioPreprocess.from_dict({"bogus": 1})
    with pytest.raises(ConfigError):
        AudioPreprocess(sample_rate_hz=8000)  # fbank still at 16 kHz
    with pytest.raises(ConfigError):
        FbankConfig(window="kaiser")


@pytest.mark.torch
def test_fbank_against_torch_reference() -> None:
    """Independent float64 reference written with plain torch ops from the spec (not torchaudio)."""
    torch = pytest.importorskip("torch")
    wave = np.random.default_rng(4).standard_normal(8000).astype(np.float32) * 0.3 + 0.05
    x = torch.from_numpy(wave.astype(np.float64))
    frames = x.unfold(0, 400, 160)
    frames = frames - frames.mean(dim=1, keepdim=True)
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - 0.97 * prev) * torch.hann_window(400, periodic=False, dtype=torch.float64)
    power = torch.fft.rfft(frames, n=512).abs() ** 2

    def mel(f: torch.Tensor) -> torch.Tensor:
        return 1127.0 * torch.log(1.0 + f / 700.0)

    f64 = torch.float64
    low, high = mel(torch.tensor(20.0, dtype=f64)), mel(torch.tensor(8000.0, dtype=f64))
    edges = torch.linspace(float(low), float(high), 130, dtype=f64)
    bins = mel(torch.arange(256, dtype=torch.float64) * 31.25)
    up = (bins[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    down = (edges[2:, None] - bins[None]) / (edges[2:, None] - edges[1:-1, None])
    banks = torch.cat([torch.clamp(torch.minimum(up, down), min=0), torch.zeros(128, 1, dtype=f64)], 1)
    ref = torch.log(torch.clamp(power @ banks.T, min=1.1920928955078125e-07)).numpy()
    np.testing.assert_allclose(kaldi_fbank(wave), ref, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------- WAV


def test_write_read_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = np.clip(rng.standard_normal((3, 1001)) * 0.3, -1, 1).astype(np.float32)  # odd byte count
    path = tmp_path / "rt.wav"
    write_wav(path, x, 22050)
    y, rate_hz = read_wav(path)
    assert rate_hz == 22050 and y.shape == (3, 1001) and y.flags.c_contiguous
    assert np.abs(y - x).max() <= 0.5 / 32768 + 1e-9
    write_wav(path, x[0], 8000)
    assert read_wav(path)[0].shape == (1, 1001)


def test_read_integer_formats(tmp_path: Path) -> None:
    ints16 = np.array([-32768, -1, 0, 1, 32767], dtype="<i2")
    y, _ = read_wav(_write(tmp_path, "a.wav", _wav_bytes(ints16.tobytes())))
    np.testing.assert_array_equal(y[0], ints16 / 32768.0)
    u8 = np.array([0, 64, 128, 255], dtype=np.uint8)
    y, _ = read_wav(_write(tmp_path, "b.wav", _wav_bytes(u8.tobytes(), bits=8)))
    np.testing.assert_array_equal(y[0], (u8.astype(np.float64) - 128) / 128)
    i24 = np.array([-(2**23), -1, 0, 1, 2**23 - 1, 12345], dtype=np.int64)
    packed = b"".join(int(v).to_bytes(3, "little", signed=True) for v in i24)
    y, _ = read_wav(_write(tmp_path, "c.wav", _wav_bytes(packed, bits=24, channels=2)))
    assert y.shape == (2, 3)
    np.testing.assert_array_equal(y.T.ravel(), (i24 / 2.0**23).astype(np.float32))
    i32 = np.array([-(2**31), 0, 2**31 - 1, 1 << 20], dtype="<i4")
    y, _ = read_wav(_write(tmp_path, "d.wav", _wav_bytes(i32.tobytes(), bits=32)))
    np.testing.assert_array_equal(y[0], (i32.astype(np.float64) / 2.0**31).astype(np.float32))


def test_read_float_and_extensible(tmp_path: Path) -> None:
    x = np.array([[0.5, -0.25, 1.5], [0.125, 0.0, -2.0]])
    interleaved = np.ascontiguousarray(x.T)
    for bits, dtype in ((32, "<f4"), (64, "<f8")):
        data = _wav_bytes(interleaved.astype(dtype).tobytes(), code=3, channels=2, bits=bits, rate_hz=48000)
        y, rate_hz = read_wav(_write(tmp_path, f"f{bits}.wav", data))
        assert rate_hz == 48000 and y.dtype == np.float32
        np.testing.assert_array_equal(y, x.astype(np.float32))
        data = _wav_bytes(interleaved.astype(dtype).tobytes(), code=3, channels=2, bits=bits, extensible=True)
        y, _ = read_wav(_write(tmp_path, f"e{bits}.wav", data))
        np.testing.assert_array_equal(y, x.astype(np.float32))
    i24 = b"".join(v.to_bytes(3, "little", signed=True) for v in (4096, -4096))
    y, _ = read_wav(_write(tmp_path, "e24.wav", _wav_bytes(i24, bits=24, extensible=True)))
    np.testing.assert_array_equal(y[0], [4096 / 2**23, -4096 / 2**23])


def test_read_skips_unknown_and_odd_chunks(tmp_path: Path) -> None:
    odd = b"LIST" + struct.pack("<I", 5) + b"abcde" + b"\x00"  # odd size + pad byte
    junk = b"junk" + struct.pack("<I", 4) + b"1234"
    ints = np.array([100, -200, 300], dtype="<i2")
    y, _ = read_wav(_write(tmp_path, "x.wav", _wav_bytes(ints.tobytes(), extra_chunks=odd + junk)))
    np.testing.assert_array_equal(y[0], ints / 32768.0)


def test_read_errors(tmp_path: Path) -> None:
    good = _wav_bytes(np.arange(100, dtype="<i2").tobytes())
    cases = {
        "missing.wav": None,
        "garbage.wav": b"\x13\x37 this is not audio at all" * 4,
        "empty.wav": b"",
        "truncated.wav": good[:-20],
        "header_only.wav": good[:30],
        "zero_channels.wav": _wav_bytes(b"\x00\x00", channels=0),
        "adpcm.wav": _wav_bytes(b"\x00" * 8, code=2, bits=4),
        "pcm12.wav": _wav_bytes(b"\x00" * 8, bits=12),
        "float16.wav": _wav_bytes(b"\x00" * 8, code=3, bits=16),
        "short_data.wav": _wav_bytes(b"\x00" * 8, data_size=1000),
    }
    for name, data in cases.items():
        path = tmp_path / name if data is None else _write(tmp_path, name, data)
        with pytest.raises(InputError) as info:
            read_wav(path)
        message = str(info.value)
        assert name in message and "\n" not in message, message
    with pytest.raises(InputError, match=r"directory|cannot read"):
        read_wav(tmp_path)


def test_write_wav_validation(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="NaN"):
        write_wav(tmp_path / "n.wav", np.array([0.0, np.nan]), 16000)
    with pytest.raises(InputError, match="positive integer"):
        write_wav(tmp_path / "r.wav", np.zeros(4), 0)
    with pytest.raises(InputError, match="shape"):
        write_wav(tmp_path / "s.wav", np.zeros((1, 2, 3)), 16000)
