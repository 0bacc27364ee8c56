"""Seeded training augmentations on model-ready rows (torch tensors, no grad).

Every function takes a ``torch.Generator`` and returns a new tensor of the input's shape
and dtype (the input is never modified), so a fixed seed gives identical results.
They act on *model-ready* rows (after the runtime preprocessing), which keeps the
preprocessing shared with inference; the consequences are noted per function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; 0 (or probability 0) disables a step.

    Attributes:
        crop_scale: random-resized-crop area fraction range (images, depth, thermal).
        crop_ratio: random-resized-crop aspect ratio range (width / height).
        flip_p: horizontal flip probability (images, depth, thermal; drawn independently).
        map_gain: depth/thermal multiplicative jitter: x * (1 + U(-g, g)).
        map_shift: depth/thermal additive jitter in normalised units: U(-s, s).
        audio_shift_frames: maximum circular time shift of the fbank, frames (10 ms each).
        audio_gain_db: maximum gain change, dB (a log-mel offset of ``dB * ln(10) / 10 / std``).
        audio_noise_std: Gaussian noise std added to the normalised fbank.
        audio_freq_masks: number of SpecAugment frequency masks.
        audio_freq_mask_bins: maximum width of one frequency mask, mel bins.
        audio_time_masks: number of SpecAugment time masks.
        audio_time_mask_frames: maximum width of one time mask, frames.
        imu_scale: per-channel scaling x * (1 + U(-s, s)).
        imu_noise_std: Gaussian noise std in normalised units.
        imu_rotation_deg: maximum angle of a random 3-D rotation applied to accel and gyro alike.
    """

    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    map_gain: float = 0.1
    map_shift: float = 0.1
    audio_shift_frames: int = 20
    audio_gain_db: float = 6.0
    audio_noise_std: float = 0.05
    audio_freq_masks: int = 2
    audio_freq_mask_bins: int = 16
    audio_time_masks: int = 2
    audio_time_mask_frames: int = 24
    imu_scale: float = 0.1
    imu_noise_std: float = 0.05
    imu_rotation_deg: float = 15.0


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _randint(gen: torch.Generator, high: int) -> int:
    """Uniform integer in [0, high] (inclusive)."""
    return int(torch.randint(0, high + 1, (), generator=gen))


def random_resized_crop(
    x: Tensor, gen: torch.Generator, scale: tuple[float, float], ratio: tuple[float, float]
) -> Tensor:
    """Crop a random box of ``scale`` area and ``ratio`` aspect, resize back (bilinear).

    Args:
        x: (C, H, W) float, e.g. a normalised image or depth map.
        gen: the random stream.
        scale: area fraction range, e.g. (0.6, 1.0).
        ratio: aspect (w / h) range, sampled log-uniformly.

    Returns:
        (C, H, W) float; the full frame when 10 draws do not fit.
    """
    _, height, width = x.shape
    area = height * width
    for _ in range(10):
        target = area * _uniform(gen, *scale)
        aspect = math.exp(_uniform(gen, math.log(ratio[0]), math.log(ratio[1])))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = _randint(gen, height - h), _randint(gen, width - w)
            crop = x[None, :, top : top + h, left : left + w]
            return F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)[0]
    return x.clone()


def random_flip(x: Tensor, gen: torch.Generator, p: float) -> Tensor:
    """Mirror the last axis with probability ``p``; (..., W) in, same shape out."""
    return x.flip(-1) if float(torch.rand((), generator=gen)) < p else x.clone()


def map_jitter(x: Tensor, gen: torch.Generator, gain: float, shift: float) -> Tensor:
    """Depth/thermal intensity jitter ``x * (1 + U(-gain, gain)) + U(-shift, shift)``; (1, H, W) float."""
    return x * (1.0 + _uniform(gen, -gain, gain)) + _uniform(gen, -shift, shift)


def time_shift(x: Tensor, gen: torch.Generator, max_frames: int) -> Tensor:
    """Circularly roll a fbank (1, mels, frames) along time by U{-max, max} frames."""
    if max_frames <= 0:
        return x.clone()
    return torch.roll(x, _randint(gen, 2 * max_frames) - max_frames, dims=-1)


def audio_gain(x: Tensor, gen: torch.Generator, max_db: float, log_std: float) -> Tensor:
    """A random gain of U(-max_db, max_db) dB on a normalised log-mel fbank.

    Kaldi fbank values are natural-log power, so g dB adds ``g * ln(10) / 10`` before the
    ``(x - mean) / std`` normalisation, i.e. ``g * ln(10) / 10 / log_std`` after it.
    Zero-padded frames of short clips shift too (they are below any real level anyway).
    """
    return x + _uniform(gen, -max_db, max_db) * math.log(10.0) / 10.0 / log_std


def add_noise(x: Tensor, gen: torch.Generator, std: float) -> Tensor:
    """Add N(0, std^2) noise (same shape as ``x``)."""
    if std <= 0:
        return x.clone()
    return x + std * torch.randn(x.shape, generator=gen, dtype=x.dtype)


def spec_masks(x: Tensor, gen: torch.Generator, cfg: AugmentConfig) -> Tensor:
    """SpecAugment frequency and time masks on (1, mels, frames), filled with 0 (the normalised mean)."""
    out = x.clone()
    mels, frames = out.shape[-2:]
    for count, width, axis, size in (
        (cfg.audio_freq_masks, cfg.audio_freq_mask_bins, -2, mels),
        (cfg.audio_time_masks, cfg.audio_time_mask_frames, -1, frames),
    ):
        for _ in range(count):
            w = _randint(gen, min(width, size))
            start = _randint(gen, size - w)
            out.narrow(axis, start, w).zero_()
    return out


def rotation_matrix(gen: torch.Generator, max_deg: float) -> Tensor:
    """A (3, 3) float32 rotation about a uniformly random axis by U(-max_deg, max_deg) degrees (Rodrigues)."""
    axis = torch.randn(3, generator=gen)
    axis = axis / axis.norm().clamp_min(1e-12)
    angle = math.radians(_uniform(gen, -max_deg, max_deg))
    ux, uy, uz = (float(v) for v in axis)
    k = torch.tensor([[0.0, -uz, uy], [uz, 0.0, -ux], [-uy, ux, 0.0]])
    return torch.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def imu_augment(x: Tensor, gen: torch.Generator, cfg: AugmentConfig) -> Tensor:
    """Rotate, scale and add noise to an IMU row (6, samples): rows ax, ay, az, gx, gy, gz.

    The same rotation is applied to the accelerometer and gyroscope triplets (a different
    sensor mounting). The rows are already standardised per channel, so the rotation mixes
    standardised channels: close to, not exactly, the physical rotation.
    """
    out = x.clone()
    if cfg.imu_rotation_deg > 0:
        rot = rotation_matrix(gen, cfg.imu_rotation_deg).to(x.dtype)
        out = torch.cat([rot @ out[:3], rot @ out[3:6], out[6:]])
    if cfg.imu_scale > 0:
        out = out * (1.0 + (2 * torch.rand((out.shape[0], 1), generator=gen, dtype=x.dtype) - 1) * cfg.imu_scale)
    return add_noise(out, gen, cfg.imu_noise_std)


class Augmenter:
    """Augments one dataset item ``{"image": (3, S, S), <modality>: row}`` (other keys pass through).

    Args:
        modality: the paired modality (audio, depth, thermal, imu).
        cfg: strengths; None uses the defaults.
        preprocess: the modality's preprocessing dict (audio needs its ``std``).
    """

    def __init__(self, modality: str, cfg: AugmentConfig | None = None, preprocess: Mapping[str, Any] | None = None):
        self.modality = modality
        self.cfg = cfg or AugmentConfig()
        self.log_std = float((preprocess or {}).get("std", 1.0))

    def __call__(self, item: dict[str, Any], gen: torch.Generator) -> dict[str, Any]:
        """Return a new item; tensors keep their shapes and dtypes."""
        out = dict(item)
        with torch.no_grad():
            out["image"] = self.spatial(item["image"], gen)
            if self.modality in item:
                out[self.modality] = self.row(item[self.modality], gen)
        return out

    def spatial(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Random resized crop then flip of a (C, H, W) map."""
        return random_flip(random_resized_crop(x, gen, self.cfg.crop_scale, self.cfg.crop_ratio), gen, self.cfg.flip_p)

    def row(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """The modality's augmentation of one row."""
        cfg = self.cfg
        if self.modality == "audio":
            x = time_shift(x, gen, cfg.audio_shift_frames)
            x = add_noise(audio_gain(x, gen, cfg.audio_gain_db, self.log_std), gen, cfg.audio_noise_std)
            return spec_masks(x, gen, cfg)
        if self.modality in ("depth", "thermal"):
            return map_jitter(self.spatial(x, gen), gen, cfg.map_gain, cfg.map_shift)
        if self.modality == "imu":
            return imu_augment(x, gen, cfg)
        raise ValueError(f"no augmentation for modality {self.modality!r}")


def make_augmenter(spec: Any, cfg: AugmentConfig | None = None) -> Augmenter:
    """The :class:`Augmenter` for an :class:`export.train.data.PairSpec` (modality and audio std)."""
    return Augmenter(spec.modality, cfg, spec.preprocess)
