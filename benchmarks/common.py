"""Helpers shared by the benchmarks: timing loops, percentiles, cosines, machine facts, structured inputs.

numpy and the standard library only at module level; torch is never imported here.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

RESULTS = Path(__file__).parent / "results"
VERSION_PACKAGES = ("numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "pycuda", "cupy-cuda12x")


def measure(fn: Callable[[], Any], iters: int, warmup: int, sync: Callable[[], Any] | None = None,
            warmup_s: float = 0.0) -> list[float]:  # fmt: skip
    """Call ``fn`` untimed ``warmup`` times (and for at least ``warmup_s`` seconds, at most 100 calls),
    then ``iters`` times; return seconds per call.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs after each call inside the timed span.
    """
    start, calls = time.perf_counter(), 0
    while calls < warmup or (time.perf_counter() - start < warmup_s and calls < 100):
        fn()
        calls += 1
    if sync is not None:
        sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return times


def latency_stats(times_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/min/mean in milliseconds of per-call times in seconds."""
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "min_ms": float(ms.min()),
            "mean_ms": float(ms.mean())}  # fmt: skip


def cosine_stats(out: NDArray[np.floating], ref: NDArray[np.floating]) -> dict[str, float]:
    """Row-wise cosine of ``out`` vs ``ref`` ([N, D]): mean, min and centred mean.

    Centred: both sides minus the reference mean row, which removes the part of the
    embedding shared by every input (large for random weights) and shows how well the
    input-dependent part survives. Only meaningful for N >= 2.
    """
    a = np.asarray(out, dtype=np.float64).reshape(len(ref), -1)
    b = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    cos = _rowwise_cos(a, b)
    stats = {"cos_mean": float(cos.mean()), "cos_min": float(cos.min())}
    if len(b) >= 2:
        mean = b.mean(axis=0, keepdims=True)
        stats["centred_cos_mean"] = float(_rowwise_cos(a - mean, b - mean).mean())
    return stats


def _rowwise_cos(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray((a * b).sum(axis=1) / np.maximum(den, 1e-30))


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (or platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD flags that matter for INT8 GEMMs (avx2, avx512f, avx512_vnni, avx_vnni, fma)."""
    wanted = {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(wanted & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def package_versions(names: Sequence[str] = VERSION_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (absent ones left out), without importing them."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def machine_info(threads: int) -> dict[str, Any]:
    """Host, date, CPU model/cores/flags, threads, Python and library versions."""
    return {
        "host": platform.node().split(".")[0][:20] or "host",
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "threads": threads,
        "python": platform.python_version(),
        "versions": package_versions(),
    }


# --- structured, seeded inputs (one clip per row, float32 except text) -----------------------------------


def structured_inputs(modality: str, row_shape: Sequence[int], n: int, seed: int) -> NDArray[Any]:
    """``n`` plausible rows for ``modality`` (shape ``[n, *row_shape]``), deterministic in ``seed``.

    Thermal/depth: smooth multi-scale fields with Gaussian hot spots; audio: log-mel-like
    spectra (tilt, harmonics, envelope, silence) normalised like ImageBind; IMU: gravity,
    motion and noise; text: SOT, token ids, EOT, padding; vision: smooth colour images.
    """
    rng = np.random.default_rng(seed)
    make = _MAKERS.get(modality, _field_rows)
    return make(rng, tuple(int(d) for d in row_shape), n)


def _smooth_field(rng: np.random.Generator, h: int, w: int) -> NDArray[np.float64]:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    field = rng.normal() * xx + rng.normal() * yy
    for scale in (1.0, 3.0, 7.0):
        fx, fy = rng.uniform(0.5, 1.5, 2) * scale
        ph = rng.uniform(0, 2 * np.pi)
        field += np.sin(2 * np.pi * (fx * xx + fy * yy) + ph) / scale
    for _ in range(rng.integers(1, 4)):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.15)
        field += rng.uniform(1, 3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return np.asarray(field + 0.05 * rng.normal(size=(h, w)))


def _field_rows(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> NDArray[np.float32]:
    out = np.empty((n, *shape), dtype=np.float32)
    lead = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    for i in range(n):
        planes = [_smooth_field(rng, shape[-2], shape[-1]) for _ in range(lead)]
        x = np.stack(planes).reshape(shape)
        out[i] = (x - x.mean()) / (x.std() + 1e-6)
    return out


def _audio_rows(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> NDArray[np.float32]:
    mels, frames = shape[-2], shape[-1]
    out = np.empty((n, *shape), dtype=np.float32)
    f = np.arange(mels)[:, None] / mels
    t = np.arange(frames)[None, :] / frames
    for i in range(n):
        tilt = -8.0 * f * rng.uniform(0.5, 1.5)
        f0 = rng.uniform(0.03, 0.1)
        harmonics = 3.0 * (np.cos(2 * np.pi * f / f0) > 0.8)
        envelope = np.clip(np.sin(np.pi * t * rng.uniform(1, 4) + rng.uniform(0, np.pi)), 0, None)
        logmel = -6.0 + tilt + (harmonics + 4.0) * envelope + rng.normal(0, 0.7, (mels, frames))
        start = int(rng.integers(0, frames))
        logmel[:, start : start + int(rng.integers(0, frames // 5 + 1))] = -15.0  # a silent gap
        out[i] = ((logmel + 4.268) / (2 * 9.138)).reshape(shape)
    return out


def _imu_rows(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> NDArray[np.float32]:
    channels, samples = shape
    t = np.arange(samples) / 400.0
    out = np.empty((n, channels, samples), dtype=np.float32)
    for i in range(n):
        freq = rng.uniform(0.5, 3.0, (channels, 1))
        motion = rng.uniform(0.2, 2.0, (channels, 1)) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6, (channels, 1)))
        x = motion + rng.normal(0, 0.05, (channels, samples))
        x[min(2, channels - 1)] += 9.81  # gravity on the accelerometer z axis
        out[i] = x
    return out


def _text_rows(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> NDArray[np.int64]:
    ctx = shape[0]
    out = np.zeros((n, ctx), dtype=np.int64)
    for i in range(n):
        k = int(rng.integers(3, min(30, ctx - 2)))
        out[i, 0] = 49406
        out[i, 1 : k + 1] = rng.integers(256, 49406, k)
        out[i, k + 1] = 49407
    return out


def _vision_rows(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> NDArray[np.float32]:
    mean = np.array([0.48145466, 0.4578275, 0.40821073])
    std = np.array([0.26862954, 0.26130258, 0.27577711])
    out = np.empty((n, *shape), dtype=np.float32)
    for i in range(n):
        img = np.stack([_smooth_field(rng, shape[-2], shape[-1]) for _ in range(3)])
        img = 1 / (1 + np.exp(-img))  # colours in (0, 1)
        img = (img - mean[:, None, None]) / std[:, None, None]
        if len(shape) == 4:  # [3, frames, H, W]: the same still repeated
            img = np.repeat(img[:, None], shape[1], axis=1)
        out[i] = img
    return out


_MAKERS: dict[str, Callable[[np.random.Generator, tuple[int, ...], int], NDArray[Any]]] = {
    "thermal": _field_rows,
    "depth": _field_rows,
    "audio": _audio_rows,
    "imu": _imu_rows,
    "text": _text_rows,
    "vision": _vision_rows,
}
