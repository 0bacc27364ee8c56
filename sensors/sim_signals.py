"""Per-stream synthesis of the synthetic world: stream specs, sensor models, 1-second blocks.

numpy + ``runtime`` types + the ``sensors.sim_*`` modules. Each stream is made in fixed
one-second blocks, each with its own noise generator seeded by (seed, stream, block), so
the samples never depend on how a reader chunks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from runtime.types import Modality, StreamInfo
from sensors import sim_motion
from sensors.sim_audio import audio_block
from sensors.sim_scene import Camera, RoomView, objects_at, render_depth, render_rgb, render_thermal, room_view
from sensors.sim_world import Event, caption_at, overlapping

DEPTH_CAMERA = Camera(240, 320, 87.0)  # RealSense-like depth at 320x240
THERMAL_CAMERA = Camera(120, 160, 57.0)  # FLIR Lepton 3.5
RGB_CAMERA = Camera(240, 320, 69.0)
DEPTH_RANGE_M = (0.2, 6.0)  # outside: invalid (0)
THERMAL_RANGE_K = (233.15, 723.15)  # Lepton low-gain scene range, -40..450 degC
THERMAL_NETD_K = 0.05
CAPTION_DTYPE = "<U96"
_DROP_MAX = 0.05  # highest depth dropout probability


@dataclass(frozen=True)
class SimStreamSpec:
    """One stream of the synthetic world.

    Attributes:
        info: what the source announces.
        rate_hz: integer sample/frame rate; sample n is at ``n * 1e9 // rate_hz`` ns.
        code: identifies the stream in noise seeds.
    """

    info: StreamInfo
    rate_hz: int
    code: int


def stream_specs() -> tuple[SimStreamSpec, ...]:
    """Every stream of ``sim://``: imu, audio, depth, thermal, rgb, caption."""
    imu_extra = {"accel_noise_density_mps2_rthz": sim_motion.ACCEL_NOISE_DENSITY,
                 "gyro_noise_density_radps_rthz": sim_motion.GYRO_NOISE_DENSITY,
                 "accel_range_mps2": sim_motion.ACCEL_RANGE_MPS2, "gyro_range_radps": sim_motion.GYRO_RANGE_RADPS,
                 "gravity_included": True, "mount": "wearable on the person"}  # fmt: skip
    cams = {"depth": DEPTH_CAMERA, "thermal": THERMAL_CAMERA, "rgb": RGB_CAMERA}
    cam_extra = {k: {"hfov_deg": c.hfov_deg, "focal_px": c.focal_px, "mount_m": c.mount_m} for k, c in cams.items()}
    return (
        SimStreamSpec(StreamInfo("imu", Modality.IMU, "m/s^2,rad/s", 400.0, ("ax", "ay", "az", "gx", "gy", "gz"),
                                 (6,), "float32", imu_extra), 400, 1),
        SimStreamSpec(StreamInfo("audio", Modality.AUDIO, "pcm", 16000.0, ("mono",), (1,), "float32",
                                 {"bits": 16, "noise_floor_rms": 3e-4}), 16000, 2),
        SimStreamSpec(StreamInfo("depth", Modality.DEPTH, "m", 10.0, (), (240, 320), "float32",
                                 {**cam_extra["depth"], "depth_scale_m": 0.001, "invalid_m": 0.0,
                                  "range_m": list(DEPTH_RANGE_M)}), 10, 3),
        SimStreamSpec(StreamInfo("thermal", Modality.THERMAL, "K", 9.0, (), (120, 160), "float32",
                                 {**cam_extra["thermal"], "radiometric": True, "netd_k": THERMAL_NETD_K,
                                  "range_k": list(THERMAL_RANGE_K)}), 9, 4),
        SimStreamSpec(StreamInfo("rgb", Modality.VISION, "rgb8", 2.0, ("r", "g", "b"), (240, 320, 3), "uint8",
                                 cam_extra["rgb"]), 2, 5),
        SimStreamSpec(StreamInfo("caption", Modality.TEXT, "text", 1.0, (), (), CAPTION_DTYPE), 1, 6),
    )  # fmt: skip


def sample_count(rate_hz: int, duration_s: float) -> int:
    """Samples of a ``rate_hz`` stream in ``[0, duration_s)``: exactly rate × duration when whole."""
    return max(math.ceil(rate_hz * duration_s - 1e-9), 0)


def sample_offsets_ns(rate_hz: int, n0: int, n1: int) -> NDArray[np.int64]:
    """(n1 - n0,) int64 times of samples ``n0..n1-1`` in ns from the start of the streams."""
    return (np.arange(n0, n1, dtype=np.int64) * 1_000_000_000) // rate_hz


class StreamSynth:
    """Synthesises one stream on demand, one-second block at a time (the last block cached)."""

    def __init__(self, spec: SimStreamSpec, timeline: tuple[Event, ...], seed: int, n_total: int) -> None:
        self.spec, self.n_total = spec, n_total
        self._timeline, self._seed = timeline, seed
        self._view: RoomView | None = None
        self._pattern_k = np.zeros((0, 0), np.float32)
        self._cached: tuple[int, NDArray[np.generic]] | None = None

    def samples(self, n0: int, n1: int) -> NDArray[np.generic]:
        """Samples ``n0..n1-1`` (0 <= n0 <= n1 <= n_total): (n1 - n0, *sample_shape) in stream units."""
        rate = self.spec.rate_hz
        parts = [self._block(k)[max(n0 - k * rate, 0) : n1 - k * rate] for k in range(n0 // rate, -(-n1 // rate))]
        if not parts:
            return np.zeros((0, *self.spec.info.sample_shape), self.spec.info.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _block(self, k: int) -> NDArray[np.generic]:
        if self._cached is None or self._cached[0] != k:
            rate = self.spec.rate_hz
            t_s = np.arange(k * rate, min((k + 1) * rate, self.n_total), dtype=np.float64) / rate
            rng = np.random.default_rng([self._seed, self.spec.code, k])
            self._cached = (k, self._synthesise(t_s, rng))
        return self._cached[1]

    def _synthesise(self, t_s: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.generic]:
        sid = self.spec.info.stream_id
        if sid == "imu":
            return sim_motion.imu_block(self._timeline, self._seed, t_s, rng, self.spec.rate_hz)
        if sid == "audio":
            return audio_block(self._timeline, t_s, rng)
        if sid == "caption":
            return np.array([caption_at(self._timeline, float(t)) for t in t_s], CAPTION_DTYPE)
        return self._frames(t_s, rng)

    def _frames(self, t_s: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.generic]:
        sid, shape = self.spec.info.stream_id, self.spec.info.sample_shape
        cam = {"depth": DEPTH_CAMERA, "thermal": THERMAL_CAMERA, "rgb": RGB_CAMERA}[sid]
        if self._view is None:
            self._view = room_view(cam)
            self._pattern_k = thermal_pattern_k((cam.height_px, cam.width_px), self._seed)
        out = np.empty((len(t_s), *shape), self.spec.info.dtype)
        events = overlapping(self._timeline, float(t_s[0]), float(t_s[-1]) + 1e-9) if len(t_s) else []
        size = math.prod(shape)
        # temporal noise: one standard-normal pool per block, each frame a view at a random
        # offset (a fresh draw per pixel and frame would cost more than everything else together)
        pool = rng.standard_normal(size + size // 8, dtype=np.float32)
        for i, t in enumerate(t_s):
            objs = objects_at(events, float(t))
            off = int(rng.integers(1, size // 8))
            noise = pool[off : off + size].reshape(shape)
            if sid == "depth":
                out[i] = depth_sensor(render_depth(self._view, objs), noise, rng)
            elif sid == "thermal":
                out[i] = thermal_sensor(render_thermal(self._view, objs), self._pattern_k, noise)
            else:
                out[i] = rgb_sensor(render_rgb(self._view, objs), noise)
        return out


def depth_sensor(
    clean_m: NDArray[np.float32], noise: NDArray[np.float32], rng: np.random.Generator
) -> NDArray[np.float32]:
    """Stereo depth camera model: noise σ = 4 mm·z², 1 mm steps, dropouts and out-of-range pixels as 0.

    Args:
        clean_m: (H, W) float32 true depth, metres.
        noise: (H, W) float32 standard normal.
        rng: dropout generator.

    Returns:
        (H, W) float32 metres; 0 marks invalid pixels (1% near, rising to 5% beyond 5 m, out of range).
    """
    depth_m = noise * (np.float32(0.004) * clean_m * clean_m)
    depth_m += clean_m
    depth_m = np.rint(depth_m * np.float32(1000.0)) * np.float32(0.001)
    flat, clean = depth_m.reshape(-1), clean_m.reshape(-1)
    # dropouts by thinning: candidates at the highest rate (5%), each kept with p(z) / 5%
    cand = rng.integers(0, flat.size, rng.binomial(flat.size, _DROP_MAX))
    p_drop = 0.01 + 0.04 * np.clip(clean[cand] - 4.0, 0.0, 1.0)
    flat[cand[rng.random(len(cand)) * _DROP_MAX < p_drop]] = 0.0
    depth_m[(clean_m < DEPTH_RANGE_M[0]) | (clean_m > DEPTH_RANGE_M[1])] = 0.0
    return depth_m


def thermal_pattern_k(shape: tuple[int, int], seed: int) -> NDArray[np.float32]:
    """(H, W) float32 fixed-pattern offsets of one microbolometer, kelvin (column 30 mK, row 20 mK rms)."""
    h, w = shape
    fpn = np.random.default_rng([seed, 0xF9]).normal(0.0, 1.0, h + w)
    return (0.03 * fpn[None, h:] + 0.02 * fpn[:h, None]).astype(np.float32)


def thermal_sensor(
    clean_k: NDArray[np.float32], pattern_k: NDArray[np.float32], noise: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Microbolometer model: NETD 50 mK white noise, fixed pattern, 10 mK steps, scene range.

    Args:
        clean_k: (H, W) float32 scene temperature, kelvin.
        pattern_k: (H, W) float32 fixed-pattern offsets, kelvin (:func:`thermal_pattern_k`).
        noise: (H, W) float32 standard normal.

    Returns:
        (H, W) float32 kelvin (radiometric, TLinear-style 0.01 K resolution).
    """
    kelvin = noise * np.float32(THERMAL_NETD_K)
    kelvin += clean_k
    kelvin += pattern_k
    np.clip(kelvin, *THERMAL_RANGE_K, out=kelvin)
    return np.rint(kelvin * np.float32(100.0)) * np.float32(0.01)


def rgb_sensor(clean: NDArray[np.float32], noise: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Colour camera model: shot + read noise then 8 bits.

    Args:
        clean: (H, W, 3) float32 scene colours, 8-bit units.
        noise: (H, W, 3) float32 standard normal.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    noisy = noise * (np.float32(1.5) + np.float32(0.015) * clean)
    noisy += clean
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
