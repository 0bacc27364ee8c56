"""From files and strings to model-ready arrays, driven by a bundle's manifest.

One table per modality: the runtime's preprocessing config class (its defaults are
what ``export`` writes into the manifest), the streaming window, and a file loader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.config_util import config_from_dict, config_to_dict
from runtime.errors import ConfigError, EdgebindError, InputError
from runtime.fileio import read_npy
from runtime.manifest import ModalitySpec
from runtime.preprocess import audio, depth, imu, thermal, vision
from runtime.tokenizer import CONTEXT_LENGTH, VOCAB_SHA256, ClipTokenizer
from runtime.types import Modality

_CONFIG_CLASSES: dict[Modality, type] = {
    Modality.AUDIO: audio.AudioPreprocess,
    Modality.VISION: vision.VisionPreprocess,
    Modality.DEPTH: depth.DepthPreprocess,
    Modality.THERMAL: thermal.ThermalPreprocess,
    Modality.IMU: imu.ImuPreprocess,
}
_TEXT_PREPROCESS = {
    "context_length": CONTEXT_LENGTH,
    "sot_id": ClipTokenizer.sot,
    "eot_id": ClipTokenizer.eot,
    "pad_id": ClipTokenizer.pad,
    "vocab_sha256": VOCAB_SHA256,
}
AUDIO_HOP_S = 1.0  # default streaming hop for 2 s audio clips
IMU_HOP_S = 1.0  # default streaming hop for 5 s IMU windows


def preprocess_config(modality: Modality, data: Mapping[str, Any] | None = None) -> Any:
    """The modality's preprocessing config dataclass built from a manifest dict (strict keys)."""
    if modality is Modality.TEXT:
        extra = sorted(set(data or {}) - set(_TEXT_PREPROCESS))
        if extra:
            raise ConfigError(f"text preprocess: unknown key {extra[0]!r}")
        return {**_TEXT_PREPROCESS, **(data or {})}
    return config_from_dict(_CONFIG_CLASSES[modality], data or {}, f"{modality.value} preprocess")


def default_preprocess(
    modality: Modality, row_shape: Sequence[int], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Every preprocessing constant of ``modality`` as a JSON dict, checked against the graph input.

    Args:
        row_shape: the encoder's per-row input shape, e.g. (1, 128, 204) for audio.
        overrides: keys replacing the runtime defaults (e.g. a depth camera's baseline).
    """
    if modality is Modality.TEXT:
        cfg = preprocess_config(modality, overrides)
        if tuple(row_shape) != (cfg["context_length"],):
            raise ConfigError(f"text encoder takes {tuple(row_shape)} tokens, tokenizer gives {CONTEXT_LENGTH}")
        return dict(cfg)
    base = config_to_dict(_CONFIG_CLASSES[modality]())
    merged = _merge(base, dict(overrides or {}))
    cfg = preprocess_config(modality, merged)
    want = _model_shape(modality, cfg)
    if want != tuple(row_shape):
        raise ConfigError(
            f"{modality.value} preprocessing makes rows of shape {want} but the encoder takes {tuple(row_shape)}"
        )
    return config_to_dict(cfg)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _model_shape(modality: Modality, cfg: Any) -> tuple[int, ...]:
    if modality is Modality.AUDIO:
        return (1, cfg.fbank.num_mel_bins, cfg.target_frames)
    if modality is Modality.VISION:
        return (3, cfg.frames, cfg.size, cfg.size)
    if modality is Modality.IMU:
        return (6, cfg.target_samples)
    return (1, cfg.size, cfg.size)


def clips_per_input(modality: Modality, preprocess: Mapping[str, Any]) -> int:
    """Clips the official loader makes per input file (audio 3, everything else 1)."""
    return int(preprocess["clips_per_file"]) if modality is Modality.AUDIO else 1


def default_window(modality: Modality, preprocess: Mapping[str, Any]) -> dict[str, Any]:
    """Streaming window of one encoder input: length, hop and rate (frames for cameras)."""
    if modality is Modality.AUDIO:
        rate = int(preprocess["sample_rate_hz"])
        length = round(float(preprocess["clip_duration_s"]) * rate)
        return {"length_samples": length, "hop_samples": round(AUDIO_HOP_S * rate), "sample_rate_hz": rate}
    if modality is Modality.IMU:
        n = int(preprocess["target_samples"])
        rate = n / float(preprocess["window_s"])
        return {"length_samples": n, "hop_samples": round(IMU_HOP_S * rate), "sample_rate_hz": rate}
    if modality is Modality.TEXT:
        return {}
    return {"length_samples": 1, "hop_samples": 1, "sample_rate_hz": None, "unit": "frame"}


Loader = Callable[[str], NDArray[np.float32]]


def file_loader(spec: ModalitySpec, rate_hz: float | None = None) -> Loader:
    """A function from one input file to one model-ready input: (S, *row) for audio, (*row) otherwise."""
    cfg = preprocess_config(spec.modality, spec.preprocess)
    mod = spec.modality
    if mod is Modality.AUDIO:
        return lambda p: audio.load_audio_file(p, cfg)
    if mod is Modality.VISION:
        return lambda p: vision.to_clip(vision.preprocess_image(vision.load_image(p), cfg), cfg.frames)
    if mod is Modality.DEPTH:
        return lambda p: depth.load_depth(p, cfg)
    if mod is Modality.THERMAL:
        return lambda p: thermal.load_thermal(p, cfg)
    if mod is Modality.IMU:
        return lambda p: imu.load_imu(p, rate_hz, cfg)
    raise InputError("text inputs are strings, not files")


def load_batch(
    spec: ModalitySpec, items: Sequence[str], rate_hz: float | None = None
) -> tuple[NDArray[np.float32] | None, list[str]]:
    """Load every input file; never drops one silently.

    Returns:
        (stacked array or None when any input failed, one error line per failed input).
    """
    loader = file_loader(spec, rate_hz)
    arrays: list[NDArray[np.float32]] = []
    errors: list[str] = []
    for item in items:
        try:
            arrays.append(loader(item))
        except EdgebindError as exc:
            errors.append(str(exc))
        except (OSError, ValueError) as exc:
            errors.append(f"{item}: {exc}")
    if errors or not arrays:
        return None, errors or ["no inputs given"]
    return np.stack(arrays), []


def tokenize(texts: Sequence[str], vocab_path: Path) -> NDArray[np.int64]:
    """Tokenise ``texts`` with the bundle's vocabulary: (N, 77) int64."""
    return ClipTokenizer.from_file(vocab_path).encode(list(texts))


def load_preprocessed(path: str | Path, spec: ModalitySpec) -> NDArray[np.generic]:
    """Read one ``.npy`` already in the model's input layout, batch first (no pickles)."""
    arr = read_npy(path)
    want = np.dtype(spec.input.dtype)
    if arr.dtype.kind != want.kind or (want.kind == "i" and arr.dtype.itemsize > want.itemsize):
        raise InputError(f"{path}: dtype {arr.dtype} but the {spec.modality.value} encoder takes {want}")
    return arr.astype(want, copy=False)
