"""The robot's microphone in the synthetic world: event sounds plus a noise floor, 16-bit mono PCM.

numpy + :mod:`sensors.sim_world` only. Every sound is a function of the sim clock and the
event's seed, so a block boundary never changes a sample (only noise uses the block's rng).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from sensors.sim_world import Event, EventParams, event_params, overlapping

ALARM_HZ = 3100.0  # piezo smoke-alarm tone
NOISE_FLOOR = 3e-4  # white noise rms, ~-70 dBFS
_VOWELS_HZ = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))
_FADE_S = 0.05


def _decays(t_s: NDArray[np.float64], onsets_s: NDArray[np.float64], freq_hz: NDArray[np.float64],
            amp: NDArray[np.float64], decay_s: NDArray[np.float64]) -> NDArray[np.float64]:  # fmt: skip
    """Sum of exponentially decaying sinusoids starting at ``onsets_s`` (each cut after 8 decays)."""
    out = np.zeros_like(t_s)
    if not len(t_s):
        return out
    t0_s, step_s = float(t_s[0]), float(t_s[1] - t_s[0]) if len(t_s) > 1 else 1.0
    for on, f, a, d in zip(onsets_s, freq_hz, amp, decay_s, strict=True):
        i0, i1 = max(math.ceil((on - t0_s) / step_s), 0), min(math.ceil((on + 8 * d - t0_s) / step_s), len(t_s))
        if i1 > i0:
            dt = t_s[i0:i1] - on
            out[i0:i1] += a * np.exp(-dt / d) * np.sin(2 * np.pi * f * dt)
    return out


def _clicks(t_s: NDArray[np.float64], onsets_s: NDArray[np.float64], amp: NDArray[np.float64],
            decay_s: float) -> NDArray[np.float64]:  # fmt: skip
    """Broadband decaying clicks: deterministic noise seeded by each onset's sample index."""
    out = np.zeros_like(t_s)
    if len(t_s) < 2:
        return out
    rate_hz = 1.0 / float(t_s[1] - t_s[0])
    for on, a in zip(onsets_s, amp, strict=True):
        i_on = round(on * rate_hz)
        n = round(8 * decay_s * rate_hz)
        i0 = i_on - round(float(t_s[0]) * rate_hz)
        lo, hi = max(i0, 0), min(i0 + n, len(t_s))
        if hi > lo:
            burst = np.random.default_rng([i_on, 0xC11C]).normal(0.0, 1.0, n)
            burst *= a * np.exp(-np.arange(n) / (decay_s * rate_hz))
            out[lo:hi] += burst[lo - i0 : hi - i0]
    return out


def _fade(tau_s: NDArray[np.float64], length_s: float) -> NDArray[np.float64]:
    return np.clip(np.minimum(tau_s, length_s - tau_s) / _FADE_S, 0.0, 1.0)


def _steps(ev: Event, p: EventParams, t_s: NDArray[np.float64], loud: float) -> NDArray[np.float64]:
    onsets = ev.start_s + np.arange(0.0, ev.end_s - ev.start_s, 1.0 / p.step_hz)
    gain = loud * p.level * np.ones(len(onsets))
    if ev.label == "approach":  # louder as the person comes closer (5 m -> 0.8 m)
        gain *= 0.3 + 0.7 * (onsets - ev.start_s) / max(ev.end_s - ev.start_s, 1e-6)
    thump = _decays(t_s, onsets, np.full(len(onsets), 85.0), gain, np.full(len(onsets), 0.035))
    return thump + _clicks(t_s, onsets, 0.4 * gain, 0.003)


def _alarm(tau_s: NDArray[np.float64]) -> NDArray[np.float64]:
    cyc = np.mod(tau_s, 4.0)
    gate = (cyc < 3.0) & (np.mod(cyc, 1.0) < 0.5)
    ph = 2 * np.pi * ALARM_HZ * tau_s
    return 0.3 * gate * (np.sin(ph) + 0.2 * np.sin(2 * ph))


def _engine(p: EventParams, tau_s: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
    k = np.arange(1, 9)[:, None]
    hum = (np.sin(2 * np.pi * p.f0_hz * k * tau_s[None, :] + k) / k).sum(axis=0)
    hum *= 1.0 + 0.3 * np.sin(np.pi * p.f0_hz * tau_s)
    rumble = np.convolve(rng.normal(0.0, 1.0, len(tau_s)), np.ones(24) / 24, mode="full")[11 : 11 + len(tau_s)]
    return 0.08 * p.level * hum + 0.1 * rumble


def _speech(ev: Event, p: EventParams, t_s: NDArray[np.float64]) -> NDArray[np.float64]:
    """Syllables: harmonics of f0 shaped by three vowel formants, ~4 per second, with pauses."""
    out = np.zeros_like(t_s)
    rng = np.random.default_rng([ev.seed, 0x5BEE])
    on_s = ev.start_s + 0.1
    t0_s, t1_s = float(t_s[0]), float(t_s[-1])
    while on_s < min(ev.end_s, t1_s):
        dur_s, vowel = float(rng.uniform(0.12, 0.3)), _VOWELS_HZ[int(rng.integers(len(_VOWELS_HZ)))]
        f0 = p.f0_hz * float(rng.uniform(0.9, 1.1))
        if on_s + dur_s > t0_s:
            sel = (t_s >= on_s) & (t_s < min(on_s + dur_s, ev.end_s))
            dt = t_s[sel] - on_s
            harm = f0 * np.arange(1, int(3800 / f0) + 1)
            gains = sum(1.0 / (1.0 + ((harm - fm) / 90.0) ** 2) / (j + 1) for j, fm in enumerate(vowel))
            wave = (gains[:, None] * np.sin(2 * np.pi * harm[:, None] * dt[None, :])).sum(axis=0)
            out[sel] += 0.12 * p.level * np.sin(np.pi * dt / dur_s) * wave
        on_s += dur_s + float(rng.uniform(0.03, 0.1)) + (float(rng.uniform(0.3, 0.6)) if rng.random() < 0.15 else 0.0)
    return out


def _glass(ev: Event, t_s: NDArray[np.float64]) -> NDArray[np.float64]:
    rng = np.random.default_rng([ev.seed, 0x6A55])
    crash_s = ev.start_s + 0.05
    n_ring, n_tink = 7, 16
    onsets = np.concatenate([np.full(n_ring, crash_s), crash_s + rng.uniform(0.25, 1.8, n_tink)])
    freq = np.concatenate([rng.uniform(2500, 7000, n_ring), rng.uniform(3000, 7500, n_tink)])
    amp = np.concatenate([rng.uniform(0.08, 0.18, n_ring), rng.uniform(0.02, 0.1, n_tink)])
    decay = np.concatenate([rng.uniform(0.08, 0.35, n_ring), rng.uniform(0.015, 0.06, n_tink)])
    keep = onsets < ev.end_s
    rings = _decays(t_s, onsets[keep], freq[keep], amp[keep], decay[keep])
    return rings + _clicks(t_s, np.array([crash_s]), np.array([0.5]), 0.012)


def _knocks(ev: Event, t_s: NDArray[np.float64]) -> NDArray[np.float64]:
    groups = ev.start_s + np.arange(0.0, ev.end_s - ev.start_s - 0.5, 2.5)
    onsets = (groups[:, None] + np.array([0.0, 0.21, 0.43])[None, :]).ravel()
    n = len(onsets)
    low = _decays(t_s, onsets, np.full(n, 150.0), np.full(n, 0.35), np.full(n, 0.03))
    high = _decays(t_s, onsets, np.full(n, 420.0), np.full(n, 0.15), np.full(n, 0.015))
    return low + high + _clicks(t_s, onsets, np.full(n, 0.2), 0.002)


def _fire(tau_s: NDArray[np.float64], rng: np.random.Generator, t_s: NDArray[np.float64]) -> NDArray[np.float64]:
    n_pops = rng.poisson(25.0 * (tau_s[-1] - tau_s[0] + 1e-3))
    onsets = np.sort(rng.uniform(float(t_s[0]), float(t_s[-1]), n_pops))
    pops = _clicks(t_s, onsets, 0.04 * (1.0 + rng.pareto(2.5, n_pops)), 0.0015)
    # "full" then the centre: "same" returns max(len, 64) values, too many for a block under 64 samples
    rumble = np.convolve(rng.normal(0.0, 1.0, len(tau_s)), np.ones(64) / 64, mode="full")[31 : 31 + len(tau_s)]
    return pops + 0.15 * rumble + 0.004 * rng.normal(0.0, 1.0, len(tau_s))


def _event_sound(ev: Event, t_s: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
    p, tau_s = event_params(ev), t_s - ev.start_s
    if ev.label in {"walking", "running", "approach"}:
        return _steps(ev, p, t_s, 0.25 if ev.label == "running" else 0.1)
    if ev.label == "fall":
        hit = np.array([ev.start_s + 0.7])
        return (_decays(t_s, hit, np.array([55.0]), np.array([0.6 * p.level]), np.array([0.12]))
                + _clicks(t_s, hit, np.array([0.25]), 0.02)
                + 0.02 * rng.normal(0.0, 1.0, len(t_s)) * (tau_s < 0.7))  # fmt: skip
    if ev.label == "glass_break":
        return _glass(ev, t_s)
    if ev.label == "door_knock":
        return _knocks(ev, t_s)
    length_s = ev.end_s - ev.start_s
    if ev.label == "alarm":
        return _alarm(tau_s) * _fade(tau_s, length_s)
    if ev.label == "engine":
        return _engine(p, tau_s, rng) * _fade(tau_s, length_s)
    if ev.label == "speech":
        return _speech(ev, p, t_s)
    if ev.label == "fire":
        return _fire(tau_s, rng, t_s) * _fade(tau_s, length_s)
    return np.zeros_like(t_s)


def audio_block(timeline: tuple[Event, ...], t_s: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float32]:
    """Microphone samples at times ``t_s``.

    Args:
        timeline: ground-truth events.
        t_s: (N,) float64 evenly spaced sample times, seconds on the sim clock.
        rng: this block's noise generator.

    Returns:
        (N, 1) float32 mono PCM in [-1, 1], 16-bit quantised, with a white + rumble noise floor.
    """
    if not len(t_s):
        return np.zeros((0, 1), np.float32)
    out = NOISE_FLOOR * rng.normal(0.0, 1.0, len(t_s))
    out += 6 * NOISE_FLOOR * np.convolve(rng.normal(0.0, 1.0, len(t_s)), np.ones(32) / 32, mode="same")
    for ev in overlapping(timeline, float(t_s[0]), float(t_s[-1]) + 1e-9):
        sel = (t_s >= ev.start_s) & (t_s < ev.end_s)
        out[sel] += _event_sound(ev, t_s[sel], rng)
    pcm = np.clip(np.round(out * 32767.0), -32767, 32767) / 32767.0
    return pcm.astype(np.float32)[:, None]
