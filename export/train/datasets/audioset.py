"""AudioSet (video frame + audio) into paired image/audio records.

Layout read (the official segment CSVs plus per-segment media as downloaders write it)::

    <root>/
      balanced_train_segments.csv    official: 3 header lines starting with "#", then rows
      eval_segments.csv              ``YTID, start_seconds, end_seconds, "mid1,mid2,..."``
      unbalanced_train_segments.csv
      class_labels_indices.csv       optional, official: ``index,mid,display_name`` (captions)
      audio/<split>/<clip>.wav       one WAV per 10 s segment (convert FLAC/M4A with ffmpeg first)
      frames/<split>/<clip>/*.jpg    frames extracted from the segment's video (e.g. ffmpeg -vf fps=1),
      frames/<split>/<clip>.jpg      or a single frame per segment

``<split>`` is the CSV name without ``_segments.csv`` (``balanced_train``, ``eval``,
``unbalanced_train``). ``<clip>`` is the first of ``YTID``, ``YTID_<start>``
(integer seconds), ``YTID_<start_ms>`` or ``YTID_<start>_<end>`` (``%.3f``) that exists,
covering the common downloader naming schemes. Segments whose audio or frame is
missing (many YouTube videos are gone) are counted and logged, never fatal.
The image of a pair is the middle frame (sorted by name) of the segment.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from export.train.data import PairRecord, log_dropped
from runtime.errors import InputError

logger = logging.getLogger("edgebind.train.data")

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_segments(csv_path: Path) -> list[tuple[str, float, float, list[str]]]:
    """Parse an official segments CSV: ``(ytid, start_s, end_s, [label mids])`` per row; ``#`` lines skipped."""
    try:
        text = csv_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{csv_path}: cannot read the AudioSet segments CSV ({exc})") from None
    rows: list[tuple[str, float, float, list[str]]] = []
    body = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    for number, row in enumerate(csv.reader(body, skipinitialspace=True), start=1):
        if len(row) < 4:
            raise InputError(f"{csv_path}: data row {number}: expected YTID, start, end, labels; got {row}")
        try:
            start, end = float(row[1]), float(row[2])
        except ValueError:
            raise InputError(f"{csv_path}: data row {number}: start/end are not numbers: {row[1:3]}") from None
        rows.append((row[0], start, end, [m for m in ",".join(row[3:]).split(",") if m]))
    return rows


def read_label_names(root: Path) -> dict[str, str]:
    """``mid -> display_name`` from ``class_labels_indices.csv``; empty when the file is absent."""
    path = root / "class_labels_indices.csv"
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8", newline="") as f:
        return {r["mid"]: r["display_name"] for r in csv.DictReader(f)}


def clip_stems(ytid: str, start_s: float, end_s: float) -> list[str]:
    """Candidate file stems of one segment, in the order they are tried."""
    return [ytid, f"{ytid}_{int(start_s)}", f"{ytid}_{round(start_s * 1000)}", f"{ytid}_{start_s:.3f}_{end_s:.3f}"]


def middle_frame(frames_dir: Path, stem: str) -> Path | None:
    """The middle frame of ``frames_dir/stem/`` (sorted), or ``frames_dir/stem.<jpg|png>``, or None."""
    folder = frames_dir / stem
    if folder.is_dir():
        frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        return frames[len(frames) // 2] if frames else None
    for suffix in FRAME_SUFFIXES:
        if (frames_dir / f"{stem}{suffix}").is_file():
            return frames_dir / f"{stem}{suffix}"
    return None


def audioset_records(root: str | Path, split: str = "balanced_train") -> list[PairRecord]:
    """Pair every available segment of ``split`` with its middle video frame.

    Args:
        root: the AudioSet folder (see the module docstring).
        split: ``balanced_train``, ``eval`` or ``unbalanced_train`` (``<split>_segments.csv``).

    Returns:
        One record per segment with both files: image = middle frame, target = the WAV,
        caption = the label display names joined by ", " ("" without ``class_labels_indices.csv``).

    Raises:
        InputError: missing CSV, malformed CSV row, or no segment with both files.
    """
    root = Path(root)
    csv_path = root / f"{split}_segments.csv"
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: no such AudioSet segments CSV (expected <root>/<split>_segments.csv)")
    names = read_label_names(root)
    audio_dir, frames_dir = root / "audio" / split, root / "frames" / split
    records: list[PairRecord] = []
    missing: list[str] = []
    for ytid, start, end, mids in read_segments(csv_path):
        found = _find_pair(audio_dir, frames_dir, clip_stems(ytid, start, end))
        if found is None:
            missing.append(f"{csv_path.name}: {ytid} @ {start:g} s: no WAV + frame under {audio_dir} / {frames_dir}")
            continue
        caption = ", ".join(names.get(m, m) for m in mids) if names else ""
        records.append(PairRecord(found[1], found[0], caption, source=f"{csv_path.name}:{ytid}"))
    log_dropped(missing, f"AudioSet {split}")
    if not records:
        raise InputError(f"{root}: no AudioSet {split} segment has both audio and a frame ({len(missing)} missing)")
    return records


def _find_pair(audio_dir: Path, frames_dir: Path, stems: list[str]) -> tuple[Path, Path] | None:
    for stem in stems:
        wav = audio_dir / f"{stem}.wav"
        if wav.is_file():
            frame = middle_frame(frames_dir, stem)
            return (wav, frame) if frame is not None else None
    return None
