"""File loaders for training rows: the runtime's own preprocessing, one model-ready row per file.

Used by :class:`export.train.data.PairedDataset`; torch-free (numpy in, numpy out).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import InputError
from runtime.fileio import import_extra, read_npy
from runtime.preprocess import audio, depth, imu, thermal, vision
from runtime.preprocess.wav import read_wav

if TYPE_CHECKING:
    from export.train.data import PairRecord, PairSpec

_THERMAL_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def load_image_row(path: Path, cfg: vision.VisionPreprocess) -> NDArray[np.float32]:
    """One image file to a model-ready still frame: float32 (3, size, size), CLIP-normalised."""
    return vision.preprocess_image(vision.load_image(path), cfg)


def load_target(record: PairRecord, cfg: Any, spec: PairSpec, rng: np.random.Generator) -> NDArray[np.float32]:
    """The default :data:`TargetLoader`: the runtime's file loaders, one row of ``spec.row_shape``."""
    path = record.target
    if spec.modality == "audio":
        return _load_audio_row(record, cfg, spec, rng)
    if spec.modality == "depth":
        return depth.load_depth(path, cfg)
    if spec.modality == "thermal":
        if path.suffix.lower() in _THERMAL_IMAGE_SUFFIXES:
            return thermal.preprocess_thermal(_read_gray8(path), cfg, name=str(path))
        return thermal.load_thermal(path, cfg)
    if record.start_s is None:
        return imu.load_imu(path, record.rate_hz, cfg)
    return _load_imu_window(record, cfg)


def _load_audio_row(
    record: PairRecord, cfg: audio.AudioPreprocess, spec: PairSpec, rng: np.random.Generator
) -> NDArray[np.float32]:
    """One clip (1, mels, frames): the clip at ``start_s``, else one of the official per-file clips."""
    if record.start_s is None:
        clips = audio.load_audio_file(record.target, cfg)
        pick = {"random": int(rng.integers(len(clips))), "center": len(clips) // 2, "first": 0}[spec.audio_clip]
        return clips[pick]
    wave, rate = read_wav(record.target)
    first = int(record.start_s * rate)
    segment = wave[:, first : first + round(cfg.clip_duration_s * rate)]
    if segment.shape[1] == 0:
        raise InputError(f"{record.target}: start_s {record.start_s} s is past the end of the audio")
    try:
        return audio.file_to_clips(segment, rate, dataclasses.replace(cfg, clips_per_file=1))[0]
    except InputError as exc:
        raise InputError(f"{record.target}: {exc}") from None


def _load_imu_window(record: PairRecord, cfg: imu.ImuPreprocess) -> NDArray[np.float32]:
    """The window starting at ``start_s`` of an (N, 6) or (6, N) ``.npy`` sampled at ``rate_hz``."""
    path = record.target
    rate = record.rate_hz or cfg.input_rate_hz
    if path.suffix.lower() != ".npy" or not rate:
        raise InputError(f"{path}: start_s needs a time-major .npy IMU file and rate_hz")
    samples = read_npy(path)
    if samples.ndim == 2 and samples.shape[0] == 6 and samples.shape[1] != 6:
        samples = samples.T  # channel-major file
    first = round(float(record.start_s or 0.0) * rate)
    return imu.preprocess_imu(samples[first:], rate, cfg, name=str(path))


def _read_gray8(path: Path) -> NDArray[np.uint8]:
    """Decode an 8-bit thermal image (JPEG etc.) as Pillow "L" (the runtime's 8-bit thermal path)."""
    image_module = import_extra("PIL.Image", "thermal image decoding")
    try:
        with image_module.open(path) as image:
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: unreadable thermal image ({exc})") from None
