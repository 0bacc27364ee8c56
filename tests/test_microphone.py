"""mic:// source and ``python -m sensors.list`` against a real PortAudio capture of a PulseAudio null sink.

The PulseAudio tests need ``eval "$(bash scripts/start_pulseaudio.sh)"`` first; without a reachable
server they skip locally and fail when ``CI=true``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import ConfigError
from runtime.preprocess.wav import write_wav
from runtime.sources import SourceError, open_source, parse_uri
from runtime.types import Modality, Samples

REPO = Path(__file__).resolve().parents[1]
TONE_HZ = 1234.0
TONE_S = 2.0
FIRST_DATA_TIMEOUT_S = 8.0  # an idle null sink delivers its first block up to ~2 s late


def _pulse_problem() -> str | None:
    """Why the PulseAudio test server is unusable, or None when it is reachable."""
    if shutil.which("pactl") is None or shutil.which("paplay") is None:
        return "pactl/paplay missing (apt-get install pulseaudio pulseaudio-utils)"
    try:
        info = subprocess.run(["pactl", "info"], check=False, capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return "pactl info timed out"
    if info.returncode != 0:
        detail = " ".join(info.stderr.split()) or "pactl info failed"
        return f"no PulseAudio server reachable ({detail})"
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"sounddevice unusable: {exc} (pip install sounddevice; apt-get install libportaudio2)"
    return None


@pytest.fixture(scope="module")
def pulse_sink() -> str:
    """The null sink the microphone hears; skip (or fail on CI) without a PulseAudio server."""
    problem = _pulse_problem()
    if problem is not None:
        message = f'{problem}; run: eval "$(bash scripts/start_pulseaudio.sh)"'
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return os.environ.get("EDGEBIND_MIC_SINK", "edgebind_mic")


@pytest.fixture(scope="module")
def tone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s, 1234 Hz, 0.5 amplitude mono tone at 48 kHz."""
    rate_hz = 48000
    t_s = np.arange(int(TONE_S * rate_hz)) / rate_hz
    path = tmp_path_factory.mktemp("tone") / "tone.wav"
    write_wav(path, 0.5 * np.sin(2 * np.pi * TONE_HZ * t_s), rate_hz)
    return path


def _read_for(source: object, duration_s: float) -> list[Samples]:
    chunks = []
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        chunk = source.read(0.1)  # type: ignore[attr-defined]
        if chunk is not None:
            chunks.append(chunk)
    return chunks


def _wait_first(source: object) -> Samples:
    end = time.monotonic() + FIRST_DATA_TIMEOUT_S
    while time.monotonic() < end:
        chunk = source.read(0.1)  # type: ignore[attr-defined]
        if chunk is not None:
            return chunk
    pytest.fail(f"no audio within {FIRST_DATA_TIMEOUT_S} s")


def _peak_hz(values: np.ndarray, rate_hz: float) -> float:
    """Frequency of the largest FFT bin, refined by a parabola through log magnitudes."""
    spectrum = np.abs(np.fft.rfft(values * np.hanning(len(values))))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
    return float((k + 0.5 * (a - c) / (a - 2 * b + c)) * rate_hz / len(values))


def test_records_tone_with_monotonic_timestamps(pulse_sink: str, tone_wav: Path) -> None:
    with open_source("mic://default") as source:
        (info,) = source.streams
        assert (info.stream_id, info.modality, info.units) == ("audio", Modality.AUDIO, "pcm")
        assert (info.channels, info.sample_shape, info.dtype) == (("mono",), (1,), "float32")
        rate_hz = float(info.rate_hz or 0)
        chunks = [_wait_first(source)]
        wall_start_s = time.monotonic()
        player = subprocess.Popen(["paplay", f"--device={pulse_sink}", str(tone_wav)])
        chunks += _read_for(source, TONE_S + 0.6)
        wall_s = time.monotonic() - wall_start_s
        assert player.wait(timeout=5) == 0
        now_ns = time.monotonic_ns()
        stats = source.stats()
    t_ns = np.concatenate([c.t_ns for c in chunks])
    values = np.concatenate([c.values for c in chunks])
    assert values.dtype == np.float32 and values.shape == (len(t_ns), 1)
    assert stats.samples["audio"] == len(t_ns)
    assert np.all(np.diff(t_ns) > 0), "timestamps must be strictly increasing"
    assert len(t_ns) == pytest.approx(rate_hz * (t_ns[-1] - t_ns[0]) / 1e9, rel=0.02)
    assert len(t_ns) - len(chunks[0]) == pytest.approx(rate_hz * wall_s, rel=0.1)
    assert -0.05 < (now_ns - t_ns[-1]) / 1e9 < 0.5, "last stamp must be close to now"
    loud = values[:, 0][np.abs(values[:, 0]) > 0.05]
    assert len(loud) > 0.8 * TONE_S * rate_hz * 0.9, "the tone was not recorded"
    peak_hz = _peak_hz(values[:, 0], rate_hz)
    print(f"rate {rate_hz:g} Hz, {len(t_ns)} samples in {wall_s:.2f} s, peak {peak_hz:.2f} Hz")
    assert abs(peak_hz - TONE_HZ) <= 5.0


def test_open_by_name_with_rate(pulse_sink: str) -> None:
    with open_source("mic://PULSE?rate=48000&block_ms=10&channels=1") as source:
        (info,) = source.streams
        assert info.rate_hz == 48000.0 and info.extra["device"] == "pulse"
        assert info.extra["captured_channels"] == 1
        assert len(_wait_first(source)) > 0


def test_unknown_device_lists_inputs(pulse_sink: str) -> None:
    with pytest.raises(SourceError, match=r"no input device matches 'no-such-mic'; available inputs: .*pulse"):
        open_source("mic://no-such-mic")


def test_reconnects_after_the_device_vanishes(pulse_sink: str) -> None:
    """Unloading the null sink kills the capture stream; the source must count it and reopen."""
    modules = subprocess.run(["pactl", "list", "short", "modules"], capture_output=True, text=True, check=True)
    (module_id,) = [line.split()[0] for line in modules.stdout.splitlines() if f"sink_name={pulse_sink}" in line]
    restore_env = dict(os.environ, EDGEBIND_PULSE_DIR=os.environ.get("XDG_RUNTIME_DIR", ""))
    with open_source("mic://default?block_ms=20") as source:
        _wait_first(source)
        try:
            subprocess.run(["pactl", "unload-module", module_id], check=True)
            deadline = time.monotonic() + 5.0
            while source.stats().reconnects < 1 and time.monotonic() < deadline:
                source.read(0.1)
        finally:
            subprocess.run(
                ["bash", str(REPO / "scripts/start_pulseaudio.sh")],
                env=restore_env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        stats = source.stats()
        assert stats.errors.get("disconnect", 0) >= 1 and stats.reconnects >= 1, stats
        before = source.stats().samples.get("audio", 0)
        _read_for(source, 0.5)
        _wait_first(source)
        assert source.stats().samples["audio"] > before


def test_list_json_includes_the_pulse_input(pulse_sink: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sensors.list", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    listing = json.loads(out.stdout)
    assert set(listing) == {"serial", "audio", "realsense", "video"}
    names = {d["name"] for d in listing["audio"]["devices"]}
    assert {"pulse", "default"} & names, listing["audio"]
    assert all(d["uri"].startswith("mic://") for d in listing["audio"]["devices"])


# ---- no audio server needed


def test_unknown_parameter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown parameter 'gain'.*rate"):
        open_source("mic://default?gain=3")


def test_missing_sounddevice_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from sensors.microphone import MicrophoneConfig, MicrophoneSource

    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import now raises ImportError
    with pytest.raises(SourceError, match="pip install sounddevice"):
        MicrophoneSource(MicrophoneConfig.from_uri(parse_uri("mic://default")))


def test_list_survives_missing_libraries(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from sensors.list import main

    for module in ("sounddevice", "serial", "serial.tools", "pyrealsense2"):
        monkeypatch.setitem(sys.modules, module, None)
    assert main(["--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert "pip install sounddevice" in listing["audio"]["reason"]
    assert "pip install pyserial" in listing["serial"]["reason"]
    assert "pip install pyrealsense2" in listing["realsense"]["reason"]
    assert main([]) == 0
    assert "audio: not available: " in capsys.readouterr().out


@pytest.fixture()
def jittered_blocks() -> Iterator[tuple[float, int, np.ndarray]]:
    """10 s of 20 ms blocks at 48 kHz, sample clock 200 ppm fast, delivered 0-8 ms late."""
    rng = np.random.default_rng(0)
    rate_hz, n = 48000.0, 960
    true_rate_hz = rate_hz * (1 + 200e-6)
    ends_ns = 1e9 + np.arange(1, 501) * n / true_rate_hz * 1e9
    yield rate_hz, n, (ends_ns + rng.uniform(0, 8e6, len(ends_ns))).astype(np.int64)


def test_sample_clock_filters_jitter(jittered_blocks: tuple[float, int, np.ndarray]) -> None:
    from sensors.microphone import _SampleClock

    rate_hz, n, arrivals_ns = jittered_blocks
    clock = _SampleClock(rate_hz)
    stamps = np.concatenate([clock.times(clock.block_start(int(a), n), n) for a in arrivals_ns])
    assert np.all(np.diff(stamps) > 0)
    true_ns = 1e9 + np.arange(len(stamps)) / (rate_hz * (1 + 200e-6)) * 1e9
    error_ms = (stamps - true_ns) / 1e6
    assert error_ms.min() > -1.0 and error_ms.max() < 8.0, (error_ms.min(), error_ms.max())
    assert np.median(np.abs(error_ms[len(error_ms) // 2 :])) < 5.0
