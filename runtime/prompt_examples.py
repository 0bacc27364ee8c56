"""Example prompts: embed a recorded example exactly the way live windows of its modality are.

``@audio:glass.wav`` in a prompt file means "something like this clip". The example is read
with the runtime's loaders and cut into the same windows a live stream would give
(:class:`~runtime.windowing.Windower` with the bundle's window config, then
:func:`~runtime.window_input.windows_to_batch`), so the prompt lives where live windows
land. Every window is embedded, L2-normalised, and the unit vectors are averaged and
re-normalised into the example's vector.

=========  ===================================  ============================================
modality   files                                windows
=========  ===================================  ============================================
audio      ``.wav`` (any rate, mono/stereo)     sliding windows (2 s, hop 1 s); a clip shorter
                                                than one window is zero-padded to one window
imu        ``.npy`` (N, 6) / ``.csv``           sliding windows (5 s, hop 1 s); times from the CSV
                                                time column, else ``input_rate_hz`` or 400 Hz; a
                                                file shorter than a window: the IMU file loader
depth      ``.png`` (16-bit) / ``.npy``         one frame
thermal    ``.png`` / ``.npy``                  one frame
vision     ``.png`` / ``.jpg`` / ``.jpeg``...   one frame
any        ``rec.npz#stream[a:b]``              a recording's stream (``sensors.record`` /
                                                ``replay://`` format) between a and b seconds
                                                from the recording's start, windowed like live
=========  ===================================  ============================================
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import EdgebindError, InputError
from runtime.prompt_math import ExampleRef
from runtime.types import Modality, Samples, StreamInfo, Window

if TYPE_CHECKING:
    from runtime.embedder import Embedder
    from runtime.manifest import ModelManifest

RECORDING_FORMAT = "edgebind-recording-v1"
SUFFIXES: dict[str, tuple[str, ...]] = {
    "audio": (".wav", ".npz"),
    "imu": (".npy", ".csv", ".npz"),
    "depth": (".png", ".npy", ".npz"),
    "thermal": (".png", ".npy", ".npz"),
    "vision": (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".npz"),
}
_MAGIC = {  # leading bytes -> what the file is
    b"\x89PNG": "a PNG image",
    b"RIFF": "a WAV/RIFF file",
    b"\x93NUMPY": "a .npy array",
    b"PK\x03\x04": "a .npz/zip archive",
    b"\xff\xd8\xff": "a JPEG image",
}
_KIND_OF_SUFFIX = {".png": "a PNG image", ".wav": "a WAV/RIFF file", ".npy": "a .npy array",
                   ".npz": "a .npz/zip archive", ".jpg": "a JPEG image", ".jpeg": "a JPEG image"}  # fmt: skip
NS_PER_S = 1_000_000_000


def check_example_file(ref: ExampleRef, path: Path) -> None:
    """Cheap checks before loading: the file exists and is a kind the modality takes.

    Raises:
        InputError: missing file, or a file of the wrong kind (e.g. a PNG given as audio).
    """
    try:
        found = path.is_file()
    except (OSError, ValueError) as exc:  # a NUL byte, a too-long name
        raise InputError(f"{ref.describe()}: unusable path ({exc})") from None
    if not found:
        raise InputError(f"{ref.describe()}: no such file {path}; relative paths start at the prompt file "
                         "(--prompts: the current directory)")  # fmt: skip
    suffix = path.suffix.lower()
    allowed = SUFFIXES[ref.modality]
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise InputError(f"{ref.describe()}: cannot read {path} ({exc.strerror})") from None
    kind = next((k for magic, k in _MAGIC.items() if head.startswith(magic)), None)
    if suffix not in allowed:
        what = kind or f"a {suffix or 'suffix-less'} file"
        takes = [m for m, s in SUFFIXES.items() if suffix in s and m != ref.modality]
        hint = f" (did you mean @{'/@'.join(takes)}?)" if takes else ""
        raise InputError(f"{ref.describe()}: {what} is not {ref.modality}; @{ref.modality} takes "
                         f"{', '.join(allowed)}{hint}")  # fmt: skip
    expected = _KIND_OF_SUFFIX.get(suffix)
    if kind is not None and expected is not None and kind != expected:
        raise InputError(f"{ref.describe()}: {path.name} is {kind}, not {expected} as its name says; "
                         f"@{ref.modality} takes {', '.join(allowed)}")  # fmt: skip


def example_windows(ref: ExampleRef, path: Path, manifest: ModelManifest) -> NDArray[np.float32]:
    """Model-ready inputs of one example: (W, *row) float32, windowed like live streams.

    Raises:
        InputError: the bundle lacks the modality, a wrong or unreadable file, an empty segment.
    """
    from runtime.inputs import file_loader
    from runtime.window_input import windows_to_batch

    mod = Modality.parse(ref.modality)
    if mod not in manifest.modalities:
        have = ", ".join(m.value for m in manifest.modalities if m is not Modality.TEXT)
        raise InputError(f"{ref.describe()}: the bundle has no {mod.value} encoder (it has {have})")
    spec = manifest.spec(mod)
    check_example_file(ref, path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            windows = _recording_windows(ref, path, spec)
        elif mod is Modality.AUDIO:
            windows = _audio_windows(ref, path, spec)
        elif mod is Modality.IMU and (imu_windows := _imu_windows(path, spec)):
            windows = imu_windows
        else:
            row = file_loader(spec)(str(path))
            return np.asarray(row, dtype=np.float32)[None]
        return windows_to_batch(windows, spec)
    except EdgebindError as exc:
        raise InputError(f"{ref.describe()}: {' '.join(str(exc).split())}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{ref.describe()}: cannot load {path} ({exc})") from None


def _windower(info: StreamInfo, spec: Any) -> Any:
    from runtime.window_config import WindowConfig
    from runtime.windowing import Windower

    return Windower(info, WindowConfig.from_spec(spec), stream_id="example")


def _audio_windows(ref: ExampleRef, path: Path, spec: Any) -> list[Window]:
    from runtime.preprocess.wav import read_wav

    samples, rate = read_wav(path)
    samples = np.asarray(samples, dtype=np.float32)  # (channels, frames)
    samples = samples[:, None] if samples.ndim == 1 else np.ascontiguousarray(samples.T)  # (frames, channels)
    if samples.shape[0] == 0:
        raise InputError(f"{path}: no audio samples")
    window_s = float(spec.window["length_samples"]) / float(spec.window["sample_rate_hz"])
    need = int(np.ceil(window_s * rate)) + 1
    if samples.shape[0] < need:  # a short clip: one zero-padded window, like the file loader pads
        samples = np.concatenate([samples, np.zeros((need - samples.shape[0], samples.shape[1]), np.float32)])
    info = StreamInfo("example", Modality.AUDIO, "pcm", float(rate), tuple(f"ch{i}" for i in range(samples.shape[1])),
                      (samples.shape[1],), "float32")  # fmt: skip
    t_ns = np.round(np.arange(samples.shape[0]) * (NS_PER_S / rate)).astype(np.int64)
    windows = _windower(info, spec).push(Samples("example", Modality.AUDIO, t_ns, samples))
    if not windows:
        raise InputError(f"{path}: too short for one {window_s:g} s window")
    return windows


def _imu_windows(path: Path, spec: Any) -> list[Window]:
    """Sliding windows of an IMU file (empty when it is shorter than one window)."""
    from runtime.inputs import preprocess_config
    from runtime.preprocess import imu

    cfg = preprocess_config(Modality.IMU, spec.preprocess)
    if path.suffix.lower() == ".npy":
        samples, t_s = np.asarray(imu._read_npy(path, cfg), dtype=np.float64), None
    else:
        samples, t_s = imu._read_csv(path, cfg)
    if t_s is None:
        rate = float(cfg.input_rate_hz or spec.window.get("sample_rate_hz") or cfg.target_rate_hz)
        t_ns = np.round(np.arange(samples.shape[0]) * (NS_PER_S / rate)).astype(np.int64)
    else:
        t_ns = np.round((np.asarray(t_s, dtype=np.float64) - float(t_s[0])) * NS_PER_S).astype(np.int64)
        rate = float((len(t_ns) - 1) * NS_PER_S / max(int(t_ns[-1] - t_ns[0]), 1)) if len(t_ns) > 1 else 1.0
    info = StreamInfo("example", Modality.IMU, "m/s^2,rad/s", rate, tuple(cfg.input_channels), (6,), "float32")
    return _windower(info, spec).push(Samples("example", Modality.IMU, t_ns, samples.astype(np.float32)))


def _recording_windows(ref: ExampleRef, path: Path, spec: Any) -> list[Window]:
    """Windows of one stream of an edgebind recording between ``start_s`` and ``end_s``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "format" not in npz.files or str(npz["format"]) != RECORDING_FORMAT:
                raise InputError(f"{path}: not an edgebind recording (record one with sensors.record)")
            index = json.loads(str(npz["index"]))
            mod = spec.modality.value
            streams = [e for e in index if e["info"]["modality"] == mod]
            if ref.stream is not None:
                named = [e for e in index if ref.stream in (e["info"]["stream_id"], e["key"])]
                if not named:
                    ids = ", ".join(e["info"]["stream_id"] for e in index)
                    raise InputError(f"{path}: no stream {ref.stream!r} (streams: {ids})")
                if named[0]["info"]["modality"] != mod:
                    raise InputError(f"{path}: stream {ref.stream!r} is {named[0]['info']['modality']}, not {mod}")
                streams = named[:1]
            if len(streams) != 1:
                ids = ", ".join(e["info"]["stream_id"] for e in streams) or "none"
                raise InputError(f"{path}: {len(streams)} {mod} streams ({ids}); name one: rec.npz#STREAM[a:b]")
            entry = streams[0]
            starts = [int(npz[f"{e['key']}.t_ns"][0]) for e in index if len(npz[f"{e['key']}.t_ns"])]
            t_ns = np.asarray(npz[f"{entry['key']}.t_ns"], dtype=np.int64)
            values = npz[f"{entry['key']}.values"]
    except (KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable edgebind recording ({exc})") from None
    t0 = min(starts) if starts else 0
    lo = t0 + round((ref.start_s or 0.0) * NS_PER_S)
    hi = None if ref.end_s is None else t0 + round(ref.end_s * NS_PER_S)
    keep = (t_ns >= lo) & (t_ns < hi if hi is not None else True)
    if not np.any(keep):
        raise InputError(f"{path}: empty segment, no {entry['info']['stream_id']} samples in "
                         f"[{ref.start_s or 0:g}:{'' if ref.end_s is None else f'{ref.end_s:g}'}] s")  # fmt: skip
    from runtime.types import Modality as _M

    raw = entry["info"]
    rate = None if raw["rate_hz"] is None else float(raw["rate_hz"])
    shape = tuple(int(d) for d in raw["sample_shape"])
    info = StreamInfo(str(raw["stream_id"]), _M.parse(raw["modality"]), str(raw["units"]), rate,
                      tuple(raw["channels"]), shape, str(raw["dtype"]), dict(raw.get("extra", {})))  # fmt: skip
    windows = _windower(info, spec).push(Samples(info.stream_id, info.modality, t_ns[keep], values[keep]))
    if not windows:
        seconds = (int(t_ns[keep][-1]) - int(t_ns[keep][0])) / NS_PER_S
        raise InputError(f"{path}: segment of {seconds:.2f} s is shorter than one {mod} window; widen [start:end]")
    return windows


def embed_example(ref: ExampleRef, path: Path, embedder: Embedder) -> NDArray[np.float32]:
    """(D,) float32 unit: the re-normalised mean of the example's unit window embeddings."""
    x = example_windows(ref, path, embedder.manifest)
    emb = np.asarray(embedder.embed(Modality.parse(ref.modality), x).vectors, dtype=np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms <= 1e-12):
        raise InputError(f"{ref.describe()}: the {ref.modality} encoder returned a zero or non-finite embedding")
    mean = (emb / norms).mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def bundle_example_embed(embedder: Embedder) -> Any:
    """``(ExampleRef, resolved path) -> (D,) unit`` with the bundle's encoders."""

    def embed(ref: ExampleRef, path: Path) -> NDArray[np.float32]:
        return embed_example(ref, path, embedder)

    return embed


def example_file_hash(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (part of the prompt cache key)."""
    from runtime.manifest import file_sha256

    return str(file_sha256(path))
