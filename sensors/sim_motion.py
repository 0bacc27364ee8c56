"""The wearable IMU of the synthetic world: body motion per event plus a MEMS sensor model.

numpy + :mod:`sensors.sim_world` only. Body frame: z up while standing, x forward;
a resting accelerometer reads +1 g on the axis pointing up (gravity included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sensors.sim_world import Event, event_params, overlapping

G_MPS2 = 9.80665
ACCEL_NOISE_DENSITY = 180e-6 * G_MPS2  # m/s^2/sqrt(Hz) (BMI088-class)
GYRO_NOISE_DENSITY = math.radians(0.014)  # rad/s/sqrt(Hz)
ACCEL_RANGE_MPS2 = 16 * G_MPS2  # +-16 g, 16-bit
GYRO_RANGE_RADPS = math.radians(2000.0)  # +-2000 deg/s, 16-bit
_FREEFALL_S = (0.3, 0.7)  # fall: stumble until 0.3 s, free fall until the impact at 0.7 s


@dataclass
class _Body:
    """Body state over a block (mutable scratch, local to one block's synthesis).

    Attributes:
        acc: (N, 3) dynamic (non-gravity) acceleration, m/s².
        gyr: (N, 3) angular rate, rad/s.
        tilt: (N,) pitch from upright, rad (pi/2 lying on the back).
        gravity: (N,) fraction of gravity sensed (0.15 in free fall).
    """

    acc: NDArray[np.float64]
    gyr: NDArray[np.float64]
    tilt: NDArray[np.float64]
    gravity: NDArray[np.float64]


def _gait(tau_s: NDArray[np.float64], step_hz: float, amp_mps2: float) -> tuple[NDArray[np.float64], ...]:
    """Vertical bounce, fore-aft sway, half-rate lateral sway and a heel strike per step."""
    ph = 2 * np.pi * step_hz * tau_s
    since_step_s = np.mod(tau_s, 1.0 / step_hz)
    strike = 1.5 * amp_mps2 * np.exp(-since_step_s / 0.025)
    acc = np.stack([0.5 * amp_mps2 * np.sin(ph + 1.0),
                    0.4 * amp_mps2 * np.sin(ph / 2),
                    amp_mps2 * (np.sin(ph) + 0.3 * np.sin(2 * ph + 0.5)) + strike], axis=1)  # fmt: skip
    scale = amp_mps2 / (0.35 * G_MPS2)
    gyr = 0.15 * scale * np.stack([np.sin(ph / 2), np.sin(ph), 1.3 * np.sin(ph / 2 + 0.3)], axis=1)
    return acc, gyr


def _fall(tau_s: NDArray[np.float64], level: float, body: _Body, sel: NDArray[np.bool_]) -> None:
    """Stumble, free fall while pitching back 90 degrees, impact spike, lying still."""
    t_ff, t_hit = _FREEFALL_S
    stumble = tau_s < t_ff
    falling = (tau_s >= t_ff) & (tau_s < t_hit)
    after = tau_s >= t_hit
    rate = (np.pi / 2 - 0.15) / (t_hit - t_ff)
    tilt = np.where(stumble, 0.15 * (tau_s / t_ff) ** 2, 0.15 + rate * (tau_s - t_ff))
    body.tilt[sel] = np.where(after, np.pi / 2, tilt)
    body.gravity[sel] = np.where(falling, 0.15, 1.0)
    gyr = np.zeros((len(tau_s), 3))
    gyr[:, 1] = np.where(stumble, 0.3 * tau_s / t_ff**2, np.where(falling, rate, 0.0))
    dt_s = np.maximum(tau_s - t_hit, 0.0)
    ring = np.where(after, np.exp(-dt_s / 0.03) * np.cos(2 * np.pi * 22.0 * dt_s), 0.0)
    acc = np.zeros((len(tau_s), 3))
    acc[:, 0] = 6.0 * level * G_MPS2 * ring  # along the new vertical (body x when lying)
    acc[:, 1] = 1.2 * G_MPS2 * ring * np.sin(2 * np.pi * 9.0 * dt_s + 0.4)
    acc[:, 0] += np.where(after, 0.02 * np.sin(2 * np.pi * 0.25 * tau_s), 0.0)  # breathing
    gyr[:, 0] = 2.0 * ring
    gyr[:, 1] += -1.5 * ring
    body.acc[sel] += acc
    body.gyr[sel] += gyr


def _add_event(event: Event, t_s: NDArray[np.float64], body: _Body) -> None:
    sel = (t_s >= event.start_s) & (t_s < event.end_s)
    if not sel.any():
        return
    p, tau_s = event_params(event), t_s[sel] - event.start_s
    if event.label in {"walking", "approach", "running"}:
        amp = (1.2 if event.label == "running" else 0.35) * G_MPS2 * p.level
        acc, gyr = _gait(tau_s, p.step_hz, amp)
        body.acc[sel] += acc
        body.gyr[sel] += gyr
    elif event.label == "fall":
        _fall(tau_s, p.level, body, sel)
    elif event.label == "engine":
        hum = np.sin(2 * np.pi * p.f0_hz * tau_s)[:, None] * np.array([0.25, 0.18, 0.4]) * p.level
        hum += np.sin(2 * np.pi * 2 * p.f0_hz * tau_s + 0.7)[:, None] * np.array([0.1, 0.12, 0.15])
        body.acc[sel] += hum
        body.gyr[sel] += 0.02 * hum
    elif event.label == "speech":
        body.gyr[sel, 2] += 0.05 * np.sin(2 * np.pi * 0.4 * tau_s)  # gesturing, head turns


def imu_block(timeline: tuple[Event, ...], seed: int, t_s: NDArray[np.float64], rng: np.random.Generator,
              rate_hz: float) -> NDArray[np.float32]:  # fmt: skip
    """IMU samples at times ``t_s``.

    Args:
        timeline: ground-truth events.
        seed: scenario seed (sets the per-device biases).
        t_s: (N,) float64 sample times, seconds on the sim clock.
        rng: this block's noise generator.
        rate_hz: sample rate (sets the noise bandwidth).

    Returns:
        (N, 6) float32: ax, ay, az in m/s² (gravity included) then gx, gy, gz in rad/s,
        16-bit quantised and clipped to the sensor's range.
    """
    n = len(t_s)
    body = _Body(np.zeros((n, 3)), np.zeros((n, 3)), np.zeros(n), np.ones(n))
    if n:
        for event in overlapping(timeline, float(t_s[0]), float(t_s[-1]) + 1e-9):
            _add_event(event, t_s, body)
    grav = G_MPS2 * body.gravity
    acc = body.acc + np.stack([grav * np.sin(body.tilt), np.zeros(n), grav * np.cos(body.tilt)], axis=1)
    bias = np.random.default_rng([seed, 0xB1A5]).normal(0.0, 1.0, 6) * np.array([0.04] * 3 + [0.004] * 3)
    drift = 0.3 * np.sin(2 * np.pi * t_s / 300.0)[:, None]  # slow thermal bias drift
    sigma = np.sqrt(rate_hz / 2) * np.array([ACCEL_NOISE_DENSITY] * 3 + [GYRO_NOISE_DENSITY] * 3)
    out = np.concatenate([acc, body.gyr], axis=1) + bias * (1.0 + drift) + rng.normal(0.0, 1.0, (n, 6)) * sigma
    return _quantise(out).astype(np.float32)


def _quantise(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """16-bit ADC: round to the LSB of each channel's full scale and saturate."""
    full = np.array([ACCEL_RANGE_MPS2] * 3 + [GYRO_RANGE_RADPS] * 3)
    lsb = full / 32768.0
    return np.clip(np.round(values / lsb), -32768, 32767) * lsb
