"""IMU recordings to ImageBind IMU-encoder inputs (6, 2000), without torch.

ImageBind publishes no IMU loader (fact sheet §5.7). Known: 6 channels
(accelerometer x, y, z then gyroscope x, y, z is the natural reading, not
confirmed), 5 s windows of 2000 samples (=> 400 Hz). Unknown: units,
resampling, gravity removal, normalisation. Every one is a config field.

Layouts: callers pass samples **time-major**, ``(N, 6)`` (one row per sample,
as sensors and CSV files deliver them); the model takes **channel-major**
``(6, 2000)``, which is what :func:`preprocess_imu` returns.

Pipeline, in order:

1. reorder the input columns (``input_channels``) to ax, ay, az, gx, gy, gz;
2. take the first ``window_s`` seconds and resample them to ``target_samples``
   by linear interpolation at ``t0 + k * window_s / target_samples`` (timestamps
   or a nominal rate); ``resample="none"`` takes the first ``target_samples``
   samples as they are (the parity fixture recipe);
3. convert to m/s^2 and rad/s (``accel_unit`` "g" uses 9.80665 m/s^2 per g,
   ``gyro_unit`` "deg/s" uses pi / 180);
4. optional gravity removal: subtract each accelerometer channel's window mean;
5. normalise: "per_channel" standardisation over time (default: it is what the
   parity fixture used and it makes the result independent of the unknown
   units), "fixed" division by per-channel scales, or "none".
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.config_util import DictConfig, check_choices, check_positive
from runtime.errors import ConfigError, InputError
from runtime.fileio import read_npy

MODEL_CHANNELS = ("ax", "ay", "az", "gx", "gy", "gz")
TIME_COLUMN = "t_s"
_ACCEL_UNITS = ("m/s^2", "g")
_GYRO_UNITS = ("rad/s", "deg/s")
_RESAMPLES = ("linear", "none")
_GRAVITY = ("none", "mean")
_NORMALIZATIONS = ("per_channel", "fixed", "none")
_NPY_LAYOUTS = ("auto", "time_major", "channel_major")


@dataclass(frozen=True)
class ImuPreprocess(DictConfig):
    """Every constant of the IMU pipeline.

    Attributes:
        input_channels: names of the input columns in order, a permutation of
            ax, ay, az, gx, gy, gz; the output is always in that model order.
        accel_unit: accelerometer unit of the input: "m/s^2" or "g".
        gyro_unit: gyroscope unit of the input: "rad/s" or "deg/s".
        standard_gravity_m_s2: m/s^2 per g.
        window_s: window length in seconds (5 s in the paper).
        target_samples: samples per window in the model input (2000 => 400 Hz).
        resample: "linear" (interpolate onto the target grid) or "none" (take the
            first ``target_samples`` samples; the input rate is ignored).
        input_rate_hz: nominal input rate used when neither timestamps nor a rate are
            given; 0.0 means unknown (then one must be given).
        gravity: "none" or "mean" (subtract each accelerometer channel's window mean).
        normalization: "per_channel" (standardise each channel over time, population
            std), "fixed" (divide channel c by ``fixed_scale[c]``, in SI units) or "none".
        fixed_scale: six per-channel divisors for "fixed", model order, m/s^2 and rad/s.
        std_eps: lower bound of the per-channel std (a constant channel becomes zeros).
        npy_layout: layout of .npy files: "auto" (whichever axis has 6 entries),
            "time_major" (N, 6) or "channel_major" (6, N).
    """

    input_channels: tuple[str, ...] = MODEL_CHANNELS
    accel_unit: str = "m/s^2"
    gyro_unit: str = "rad/s"
    standard_gravity_m_s2: float = 9.80665
    window_s: float = 5.0
    target_samples: int = 2000
    resample: str = "linear"
    input_rate_hz: float = 0.0
    gravity: str = "none"
    normalization: str = "per_channel"
    fixed_scale: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    std_eps: float = 1e-6
    npy_layout: str = "auto"

    def __post_init__(self) -> None:
        check_choices(
            self,
            {
                "accel_unit": _ACCEL_UNITS,
                "gyro_unit": _GYRO_UNITS,
                "resample": _RESAMPLES,
                "gravity": _GRAVITY,
                "normalization": _NORMALIZATIONS,
                "npy_layout": _NPY_LAYOUTS,
            },
        )
        if sorted(self.input_channels) != sorted(MODEL_CHANNELS):
            raise ConfigError(f"ImuPreprocess.input_channels: must be a permutation of {list(MODEL_CHANNELS)}")
        if len(self.fixed_scale) != 6 or not all(s > 0 for s in self.fixed_scale):
            raise ConfigError("ImuPreprocess.fixed_scale: needs 6 positive values")
        check_positive(self, ("standard_gravity_m_s2", "window_s", "std_eps"))
        if self.target_samples < 2:
            raise ConfigError(f"ImuPreprocess.target_samples: must be >= 2, got {self.target_samples}")
        if not self.input_rate_hz >= 0:
            raise ConfigError(f"ImuPreprocess.input_rate_hz: must be >= 0 (0 = unknown), got {self.input_rate_hz}")

    @classmethod
    def fixture(cls) -> ImuPreprocess:
        """The recipe of the parity fixture ``inputs/imu.npy``: no resampling, per-channel standardisation."""
        return cls(resample="none")

    @property
    def target_rate_hz(self) -> float:
        """Sample rate of the model input: ``target_samples / window_s`` (400 Hz)."""
        return self.target_samples / self.window_s

    @property
    def input_shape(self) -> tuple[int, int]:
        """Shape of one model input: ``(6, target_samples)``."""
        return (6, self.target_samples)


def preprocess_imu(
    samples: NDArray[np.floating],
    rate_hz: float | None = None,
    cfg: ImuPreprocess | None = None,
    *,
    t_s: NDArray[np.floating] | None = None,
    name: str = "imu",
) -> NDArray[np.float32]:
    """Turn one IMU recording into an IMU-encoder input (its first ``window_s`` seconds).

    Args:
        samples: float array (N, 6), time-major, columns in ``cfg.input_channels``
            order, units ``cfg.accel_unit`` / ``cfg.gyro_unit``.
        rate_hz: nominal sample rate in Hz; give this or ``t_s`` (or set
            ``cfg.input_rate_hz``). Ignored when ``cfg.resample == "none"``.
        cfg: pipeline constants; None uses the defaults.
        t_s: float array (N,), sample times in seconds, strictly increasing.
        name: how the recording is named in error messages (e.g. its file).

    Returns:
        float32 array (6, target_samples), channel-major, model channel order;
        ``samples`` is not modified.

    Raises:
        InputError: wrong shape or channel count, NaN/inf, too few samples for the
            window, non-monotonic timestamps, non-positive rate.
    """
    cfg = cfg or ImuPreprocess()
    x = _checked_samples(samples, name)
    order = [cfg.input_channels.index(c) for c in MODEL_CHANNELS]
    x = x[:, order]
    if rate_hz is not None and not (math.isfinite(rate_hz) and rate_hz > 0):
        raise InputError(f"{name}: sample rate must be positive, got {rate_hz} Hz")
    if cfg.resample == "none":
        if x.shape[0] < cfg.target_samples:
            raise InputError(f"{name}: {x.shape[0]} samples, the window needs {cfg.target_samples}")
        window = x[: cfg.target_samples]
    else:
        times = _sample_times(x.shape[0], rate_hz, t_s, cfg, name)
        window = _resample_window(x, times, cfg, name)
    window = _to_si(window, cfg)
    if cfg.gravity == "mean":
        window[:, :3] -= window[:, :3].mean(axis=0)
    return np.ascontiguousarray(_normalize(window, cfg).T, dtype=np.float32)


def _checked_samples(samples: NDArray[np.floating], name: str) -> NDArray[np.float64]:
    arr = np.asarray(samples)
    if arr.ndim != 2 or arr.shape[1] != 6:
        hint = "; pass time-major samples (N, 6), e.g. x.T" if arr.ndim == 2 and arr.shape[0] == 6 else ""
        raise InputError(f"{name}: expected IMU samples (N, 6), got shape {arr.shape}{hint}")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{name}: expected numeric IMU samples, got dtype {arr.dtype}")
    x = arr.astype(np.float64)  # a copy: the caller's array is never written
    if not np.isfinite(x).all():
        raise InputError(f"{name}: {int((~np.isfinite(x)).sum())} NaN/inf values; drop or interpolate them first")
    return x


def _sample_times(
    n: int, rate_hz: float | None, t_s: NDArray[np.floating] | None, cfg: ImuPreprocess, name: str
) -> NDArray[np.float64]:
    """Sample times (N,) in seconds from timestamps, a given rate or the nominal rate."""
    if t_s is not None and rate_hz is not None:
        raise InputError(f"{name}: give rate_hz or t_s, not both")
    if t_s is not None:
        t = np.asarray(t_s, dtype=np.float64)
        if t.shape != (n,):
            raise InputError(f"{name}: t_s has shape {t.shape}, expected ({n},) to match the samples")
        if not np.isfinite(t).all():
            raise InputError(f"{name}: timestamps contain NaN/inf")
        if n > 1 and not (np.diff(t) > 0).all():
            raise InputError(f"{name}: timestamps are not strictly increasing; sort them and drop duplicates")
        return t
    rate = cfg.input_rate_hz if rate_hz is None else float(rate_hz)
    if rate_hz is None and rate == 0.0:
        raise InputError(f"{name}: unknown sample rate; pass rate_hz, timestamps or set input_rate_hz")
    if not (math.isfinite(rate) and rate > 0):
        raise InputError(f"{name}: sample rate must be positive, got {rate} Hz")
    return np.arange(n, dtype=np.float64) / rate


def _resample_window(
    x: NDArray[np.float64], t: NDArray[np.float64], cfg: ImuPreprocess, name: str
) -> NDArray[np.float64]:
    """Linear interpolation of the first ``window_s`` seconds onto ``target_samples`` points.

    Each input sample stands for one sample period (the median spacing), so N samples at
    rate r cover N / r seconds; grid points past the last sample hold its value.
    """
    n = x.shape[0]
    if n < 2:
        raise InputError(f"{name}: {n} samples; the {cfg.window_s} s window needs more")
    period = float(np.median(np.diff(t)))
    covered = t[-1] - t[0] + period
    if covered < cfg.window_s * (1.0 - 1e-9):
        raise InputError(f"{name}: {n} samples cover {covered:.4g} s, the window needs {cfg.window_s:g} s")
    grid = t[0] + np.arange(cfg.target_samples, dtype=np.float64) * (cfg.window_s / cfg.target_samples)
    return np.stack([np.interp(grid, t, x[:, c]) for c in range(6)], axis=1)


def _to_si(window: NDArray[np.float64], cfg: ImuPreprocess) -> NDArray[np.float64]:
    out = np.array(window, dtype=np.float64)  # always a new array
    if cfg.accel_unit == "g":
        out[:, :3] *= cfg.standard_gravity_m_s2
    if cfg.gyro_unit == "deg/s":
        out[:, 3:] *= math.pi / 180.0
    return out


def _normalize(window: NDArray[np.float64], cfg: ImuPreprocess) -> NDArray[np.float64]:
    if cfg.normalization == "per_channel":
        std = np.maximum(window.std(axis=0), cfg.std_eps)
        return (window - window.mean(axis=0)) / std
    if cfg.normalization == "fixed":
        return window / np.asarray(cfg.fixed_scale, dtype=np.float64)
    return window


def load_imu(path: str | Path, rate_hz: float | None = None, cfg: ImuPreprocess | None = None) -> NDArray[np.float32]:
    """Read an IMU file and preprocess its first window into an IMU-encoder input.

    Args:
        path: .npy of shape (N, 6) or (6, N) (``cfg.npy_layout``; "auto" picks the
            axis of length 6 and rejects (6, 6)), or .csv with 6 columns (channels in
            ``cfg.input_channels`` order) or 7 (a leading time column in seconds). A
            header row is optional; with one, columns are found by name
            (``t_s``, ax, ay, az, gx, gy, gz).
        rate_hz: sample rate in Hz when the file has no time column; a CSV time column
            takes precedence over it.
        cfg: pipeline constants; None uses the defaults.

    Returns:
        float32 array (6, target_samples).

    Raises:
        InputError: missing or malformed file, or an unusable recording.
    """
    cfg = cfg or ImuPreprocess()
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return preprocess_imu(_read_npy(path, cfg), rate_hz, cfg, name=str(path))
    if suffix == ".csv":
        samples, t_s = _read_csv(path, cfg)
        if t_s is not None:
            return preprocess_imu(samples, None, cfg, t_s=t_s, name=str(path))
        return preprocess_imu(samples, rate_hz, cfg, name=str(path))
    raise InputError(f"{path}: unsupported IMU file type {suffix!r}; use .npy or .csv")


def _read_npy(path: Path, cfg: ImuPreprocess) -> NDArray[Any]:
    arr = read_npy(path)
    if arr.ndim != 2 or 6 not in arr.shape:
        raise InputError(f"{path}: expected IMU samples (N, 6) or (6, N), got {arr.shape}")
    layout = cfg.npy_layout
    if layout == "auto":
        if arr.shape == (6, 6):
            raise InputError(f"{path}: shape (6, 6) is ambiguous; set npy_layout")
        layout = "time_major" if arr.shape[1] == 6 else "channel_major"
    return arr.T if layout == "channel_major" else arr


def _read_csv(path: Path, cfg: ImuPreprocess) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """(samples (N, 6) in ``cfg.input_channels`` order, times (N,) or None)."""
    try:
        rows = [r for r in csv.reader(io.StringIO(path.read_text(encoding="utf-8"))) if r and any(r)]
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise InputError(f"{path}: empty CSV file")
    header = [c.strip() for c in rows[0]] if not _is_numeric(rows[0]) else None
    body = rows[1:] if header else rows
    width = len(rows[0])
    try:
        data = np.array([[float(v) for v in r] for r in body if len(r) == width], dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"{path}: non-numeric value in CSV ({exc})") from None
    if data.shape[0] != len(body):
        raise InputError(f"{path}: rows have different numbers of columns; expected {width} everywhere")
    if data.size == 0:
        raise InputError(f"{path}: no data rows")
    return _csv_columns(data, header, cfg, path)


def _csv_columns(
    data: NDArray[np.float64], header: list[str] | None, cfg: ImuPreprocess, path: Path
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    if header is None:
        if data.shape[1] == 6:
            return data, None
        if data.shape[1] == 7:
            return data[:, 1:], data[:, 0]
        raise InputError(f"{path}: {data.shape[1]} columns; expected 6 (channels) or 7 (t_s + channels)")
    missing = [c for c in cfg.input_channels if c not in header]
    if missing:
        raise InputError(f"{path}: header lacks column {missing[0]!r}; expected {TIME_COLUMN}, ax, ay, az, gx, gy, gz")
    samples = data[:, [header.index(c) for c in cfg.input_channels]]
    times = data[:, header.index(TIME_COLUMN)] if TIME_COLUMN in header else None
    return samples, times


def _is_numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True
