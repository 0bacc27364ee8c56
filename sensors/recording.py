"""The recording file format: one plain ``.npz`` holding several sources' streams.

Keys (all plain arrays, readable with ``numpy.load(path, allow_pickle=False)``):

- ``format``: ``"edgebind-recording-v1"``.
- ``index``: JSON list, one entry per stream: ``{"key", "source", "uri", "info"}`` where
  ``key`` prefixes the stream's arrays, ``source`` is the source's position on the
  command line and ``info`` is its :class:`~runtime.types.StreamInfo` (units, rate, ...).
- ``<key>.t_ns``: (N,) int64 host monotonic timestamps.
- ``<key>.values``: (N, *sample_shape) in the stream's physical units.
- ``<key>.device_t_ns``: (N,) int64, only where the device had timestamps.
- ``<key>.meta``: JSON: measured rate and the source's counters at the end.
- ``timeline``: JSON list of ground-truth events (``sim://`` sources), ``[]`` otherwise;
  each event also names the source it came from.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import InputError
from runtime.types import Modality, StreamInfo

FORMAT = "edgebind-recording-v1"


@dataclass(frozen=True)
class StreamData:
    """One recorded stream.

    Attributes:
        key: array-name prefix in the file, e.g. ``"s0.imu"``.
        source_index: which source (command-line position) it came from.
        uri: that source's URI.
        info: the stream's description.
        t_ns: (N,) int64 timestamps.
        values: (N, *info.sample_shape) values.
        device_t_ns: (N,) int64 device timestamps, or None.
        meta: measured rate, counters.
    """

    key: str
    source_index: int
    uri: str
    info: StreamInfo
    t_ns: NDArray[np.int64]
    values: NDArray[Any]
    device_t_ns: NDArray[np.int64] | None
    meta: dict[str, Any]


def info_to_dict(info: StreamInfo) -> dict[str, Any]:
    """JSON form of a StreamInfo."""
    return {
        "stream_id": info.stream_id,
        "modality": info.modality.value,
        "units": info.units,
        "rate_hz": info.rate_hz,
        "channels": list(info.channels),
        "sample_shape": list(info.sample_shape),
        "dtype": info.dtype,
        "extra": dict(info.extra),
    }


def info_from_dict(data: dict[str, Any]) -> StreamInfo:
    """Inverse of :func:`info_to_dict`."""
    return StreamInfo(
        stream_id=str(data["stream_id"]),
        modality=Modality.parse(data["modality"]),
        units=str(data["units"]),
        rate_hz=None if data["rate_hz"] is None else float(data["rate_hz"]),
        channels=tuple(data["channels"]),
        sample_shape=tuple(int(d) for d in data["sample_shape"]),
        dtype=str(data["dtype"]),
        extra=dict(data.get("extra", {})),
    )


def write_recording(path: Path, streams: list[StreamData], timeline: list[dict[str, Any]]) -> None:
    """Write ``streams`` and the ground-truth ``timeline`` to ``path`` atomically."""
    arrays: dict[str, NDArray[Any]] = {"format": np.array(FORMAT)}
    index = []
    for s in streams:
        index.append({"key": s.key, "source": s.source_index, "uri": s.uri, "info": info_to_dict(s.info)})
        arrays[f"{s.key}.t_ns"] = s.t_ns
        arrays[f"{s.key}.values"] = s.values
        if s.device_t_ns is not None:
            arrays[f"{s.key}.device_t_ns"] = s.device_t_ns
        arrays[f"{s.key}.meta"] = np.array(json.dumps(s.meta))
    arrays["index"] = np.array(json.dumps(index))
    arrays["timeline"] = np.array(json.dumps(timeline))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def read_recording(path: str | Path) -> tuple[list[StreamData], list[dict[str, Any]]]:
    """Read a recording; returns (streams, timeline).

    Raises:
        InputError: missing, truncated or foreign file (one line naming it).
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise InputError(f"{path}: no such recording") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npz recording ({exc})") from None
    if str(data.get("format", "")) != FORMAT:
        raise InputError(f"{path}: not an edgebind recording (no format key {FORMAT!r}); record with sensors.record")
    try:
        streams = [_stream(entry, data) for entry in json.loads(str(data["index"]))]
        timeline = json.loads(str(data["timeline"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: damaged recording ({exc!r}); record it again") from None
    return streams, timeline


def _stream(entry: dict[str, Any], data: dict[str, NDArray[Any]]) -> StreamData:
    key = entry["key"]
    t_ns = data[f"{key}.t_ns"]
    values = data[f"{key}.values"]
    if t_ns.dtype != np.int64 or len(t_ns) != len(values):
        raise ValueError(f"{key}: timestamps and values disagree")
    return StreamData(
        key=key,
        source_index=int(entry["source"]),
        uri=str(entry["uri"]),
        info=info_from_dict(entry["info"]),
        t_ns=t_ns,
        values=values,
        device_t_ns=data.get(f"{key}.device_t_ns"),
        meta=json.loads(str(data[f"{key}.meta"])),
    )
