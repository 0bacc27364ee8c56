"""From a :class:`~runtime.types.Window` (sensor units) to one row of the encoder's input.

The per-modality preprocessing is exactly the file path's (``runtime.preprocess``),
driven by the bundle manifest's constants (:func:`runtime.inputs.preprocess_config`):

=========  ==========================  =============================================
modality   window data                 encoder row
=========  ==========================  =============================================
audio      (32000,) float32 PCM 16 kHz (1, 128, 204) via ``clip_to_input``
imu        (2000, 6) float32 at 400 Hz (6, 2000) via ``preprocess_imu(rate_hz=400)``
depth      (H, W) float32 metres       (1, 224, 224) via ``preprocess_depth``
thermal    (H, W) float32 kelvin       (1, 224, 224) via ``preprocess_thermal``
vision     (H, W, 3) uint8 RGB         (3, 2, 224, 224) via ``preprocess_image`` + ``to_clip``
=========  ==========================  =============================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import InputError
from runtime.inputs import preprocess_config
from runtime.manifest import ModalitySpec
from runtime.preprocess import audio, depth, imu, thermal, vision
from runtime.types import Modality, Window


def window_to_input(window: Window, spec: ModalitySpec, cfg: Any | None = None) -> NDArray[np.float32]:
    """Preprocess one window into one encoder input row.

    Args:
        window: a window of ``spec.modality`` (see :class:`~runtime.types.Window`).
        spec: the modality's manifest entry; its ``preprocess`` dict holds every constant.
        cfg: the parsed config (``preprocess_config(spec.modality, spec.preprocess)``);
            pass it to skip re-parsing per window.

    Returns:
        float32 array of the encoder's per-row input shape ``spec.input.shape[1:]``.

    Raises:
        InputError: the window's modality is not the spec's, the data cannot be
            preprocessed, or the result does not fit the encoder's input.
    """
    mod = spec.modality
    if window.modality is not mod:
        raise InputError(f"{window.stream_id}: a {window.modality.value} window cannot feed the {mod.value} encoder")
    cfg = preprocess_config(mod, spec.preprocess) if cfg is None else cfg
    name = f"{window.stream_id}#{window.seq}"
    row = _preprocess(window.data, mod, spec, cfg, name)
    want = tuple(spec.input.shape[1:])
    if row.shape != want:
        raise InputError(f"{name}: preprocessing gave {row.shape}, the {mod.value} encoder takes {want}")
    return row


def windows_to_batch(windows: Sequence[Window], spec: ModalitySpec) -> NDArray[np.float32]:
    """Preprocess windows of one modality into a batch: (N, *spec.input.shape[1:]) float32."""
    if not windows:
        raise InputError(f"windows_to_batch: no {spec.modality.value} windows given")
    cfg = preprocess_config(spec.modality, spec.preprocess)
    return np.stack([window_to_input(w, spec, cfg) for w in windows])


def _preprocess(data: NDArray[Any], mod: Modality, spec: ModalitySpec, cfg: Any, name: str) -> NDArray[np.float32]:
    if mod is Modality.AUDIO:
        return audio.clip_to_input(data, cfg)
    if mod is Modality.IMU:
        rate_hz = spec.window.get("sample_rate_hz") or cfg.target_rate_hz
        return imu.preprocess_imu(data, rate_hz=float(rate_hz), cfg=cfg, name=name)
    if mod is Modality.DEPTH:
        return depth.preprocess_depth(data, cfg, name=name)
    if mod is Modality.THERMAL:
        return thermal.preprocess_thermal(data, cfg, name=name)
    if mod is Modality.VISION:
        return vision.to_clip(vision.preprocess_image(np.asarray(data), cfg), cfg.frames)
    raise InputError(f"{name}: {mod.value} has no streaming windows")
