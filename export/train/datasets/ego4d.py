"""Ego4D (video frames + IMU) into paired image/IMU window records.

Layout read (Ego4D v2 as the ``ego4d`` CLI downloads it, plus extracted frames)::

    <root>/                                  e.g. ego4d_data/v2/
      imu/<video_uid>.csv                    one flat CSV per video (``--datasets imu``):
          component_idx,component_timestamp_ms,canonical_timestamp_ms,
          gyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z
      full_scale/<video_uid>.mp4             canonical videos (not decoded here)
      frames/<video_uid>/<n>.jpg             frames extracted from the canonical video at
                                             ``frames_fps``, e.g.
                                             ffmpeg -i full_scale/<uid>.mp4 -vf fps=1 frames/<uid>/%06d.jpg

IMU times are ``canonical_timestamp_ms`` (canonical-video time); rows where it is empty or
``NULL`` or where a value is missing are dropped, and rows are sorted by time with
duplicates removed (the Ego4D docs list NULL and non-monotonic timestamps as known issues).
Values are used as stored (no calibration); the runtime IMU pipeline's per-channel
standardisation makes the units irrelevant. Each video gives windows of ``window_s``
every ``hop_s`` seconds; the image is the frame at the window's centre (sorted frame k
is at ``k / frames_fps`` s; the nearest one, halves rounded up). Benchmark
``clips/<clip_uid>.mp4`` use clip time and are not read.
"""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.train.data import PairRecord, PairSpec, log_dropped
from runtime.errors import InputError
from runtime.preprocess import imu

TIME_COLUMN = "canonical_timestamp_ms"
CHANNEL_COLUMNS = ("accl_x", "accl_y", "accl_z", "gyro_x", "gyro_y", "gyro_z")  # model order ax..gz
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


@functools.lru_cache(maxsize=8)
def read_imu_table(path: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Parse an Ego4D IMU CSV.

    Returns:
        (t_s (N,) float64 seconds, strictly increasing; samples (N, 6) float64 in model order
        ax, ay, az, gx, gy, gz, units as stored).

    Raises:
        InputError: unreadable file, missing columns, or fewer than 2 usable rows.
    """
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable Ego4D IMU CSV ({exc})") from None
    wanted = (TIME_COLUMN, *CHANNEL_COLUMNS)
    if not rows or any(c not in rows[0] for c in wanted):
        raise InputError(f"{path}: expected Ego4D IMU columns {', '.join(wanted)}")
    table = [values for r in rows if (values := _row_values(r, wanted)) is not None]
    if len(table) < 2:
        raise InputError(f"{path}: fewer than 2 IMU rows with a canonical timestamp and all six values")
    data = np.asarray(table, dtype=np.float64)
    t_s, first = np.unique(data[:, 0] / 1000.0, return_index=True)  # sorted, duplicates dropped
    return t_s, data[first, 1:]


def _row_values(row: dict[str, Any], columns: tuple[str, ...]) -> list[float] | None:
    try:
        values = [float(row[c]) for c in columns]
    except (TypeError, ValueError):  # "", "NULL", None
        return None
    return values if all(np.isfinite(values)) else None


def load_ego4d_imu(record: PairRecord, cfg: imu.ImuPreprocess, spec: PairSpec, rng: np.random.Generator) -> Any:
    """:data:`export.train.data.TargetLoader` for Ego4D: the window at ``record.start_s`` → (6, target_samples)."""
    t_s, samples = read_imu_table(str(record.target))
    start = float(record.start_s or 0.0)
    keep = (t_s >= start) & (t_s < start + cfg.window_s + 1.0)
    if int(keep.sum()) < 2:
        raise InputError(f"{record.target}: no IMU samples in the window at {start:g} s")
    return imu.preprocess_imu(samples[keep], None, cfg, t_s=t_s[keep], name=f"{record.target}@{start:g}s")


def video_windows(t_s: NDArray[np.float64], window_s: float, hop_s: float) -> list[float]:
    """Start times (s) of the full windows inside the IMU time range."""
    first, last = float(t_s[0]), float(t_s[-1])
    count = int(np.floor((last - first - window_s) / hop_s + 1e-9)) + 1
    return [first + k * hop_s for k in range(max(count, 0))]


def ego4d_records(
    root: str | Path,
    *,
    window_s: float = 5.0,
    hop_s: float = 5.0,
    frames_fps: float = 1.0,
    video_uids: list[str] | None = None,
) -> list[PairRecord]:
    """Cut every video with IMU and frames into (centre frame, IMU window) records.

    Args:
        root: the Ego4D ``v2`` folder (``imu/`` and ``frames/`` inside).
        window_s: IMU window length in seconds; must equal the spec's ``window_s`` (5 s default).
        hop_s: seconds between window starts.
        frames_fps: rate at which ``frames/<uid>/`` was extracted, frames per second.
        video_uids: restrict to these videos; None = every ``imu/*.csv``.

    Returns:
        Records with ``start_s`` set; use with ``PairedDataset(..., loader=load_ego4d_imu)``.

    Raises:
        InputError: no ``imu/`` folder, or no usable video.
    """
    root = Path(root)
    if not (root / "imu").is_dir():
        raise InputError(f"{root}: no imu/ folder (expected the Ego4D v2 layout: imu/<video_uid>.csv)")
    uids = video_uids or sorted(p.stem for p in (root / "imu").glob("*.csv"))
    records: list[PairRecord] = []
    dropped: list[str] = []
    for uid in uids:
        try:
            records.extend(_video_records(root, uid, window_s, hop_s, frames_fps))
        except InputError as exc:
            dropped.append(str(exc))
    log_dropped(dropped, f"Ego4D {root}")
    if not records:
        raise InputError(f"{root}: no Ego4D video with IMU windows and frames ({len(dropped)} skipped)")
    return records


def _video_records(root: Path, uid: str, window_s: float, hop_s: float, fps: float) -> list[PairRecord]:
    csv_path = root / "imu" / f"{uid}.csv"
    frames_dir = root / "frames" / uid
    listing = frames_dir.iterdir() if frames_dir.is_dir() else iter(())
    frames = sorted(p for p in listing if p.suffix.lower() in FRAME_SUFFIXES)
    if not frames:
        raise InputError(f"{uid}: no extracted frames in {frames_dir}")
    t_s, _ = read_imu_table(str(csv_path))
    out = []
    for start in video_windows(t_s, window_s, hop_s):
        k = min(math.floor((start + window_s / 2) * fps + 0.5), len(frames) - 1)  # nearest, halves up
        out.append(PairRecord(frames[k], csv_path, start_s=start, source=f"{uid}@{start:g}s"))
    if not out:
        raise InputError(f"{uid}: IMU covers less than one {window_s:g} s window")
    return out
