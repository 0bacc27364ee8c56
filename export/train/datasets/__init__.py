"""Readers of native dataset layouts (AudioSet, SUN RGB-D, LLVIP, Ego4D) into paired records.

Each reader module turns its dataset's on-disk layout into :class:`export.train.data.PairRecord`
rows and reuses :class:`export.train.data.PairedDataset`. Readers are resolved on use
(nothing is imported here), so importing this package stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import InputError


@dataclass(frozen=True)
class ReaderInfo:
    """One native-layout reader.

    Attributes:
        records: ``"module:function"`` turning ``(root, **options)`` into a list of PairRecord.
        modality: the modality paired with the image.
        loader: ``"module:function"`` TargetLoader for the rows, "" for the default file loader.
    """

    records: str
    modality: str
    loader: str = ""


READERS: dict[str, ReaderInfo] = {
    "audioset": ReaderInfo("export.train.datasets.audioset:audioset_records", "audio"),
    "sunrgbd": ReaderInfo("export.train.datasets.sunrgbd:sunrgbd_records", "depth"),
    "llvip": ReaderInfo("export.train.datasets.llvip:llvip_records", "thermal"),
    "ego4d": ReaderInfo(
        "export.train.datasets.ego4d:ego4d_records", "imu", "export.train.datasets.ego4d:load_ego4d_imu"
    ),
}


def _resolve(target: str) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def reader_info(name: str) -> ReaderInfo:
    """The :class:`ReaderInfo` of dataset ``name``; InputError (one line) for an unknown name."""
    if name not in READERS:
        raise InputError(f"unknown dataset {name!r}: expected one of {', '.join(READERS)}")
    return READERS[name]


def open_dataset(
    name: str, root: str | Path, spec: Any, *, options: dict[str, Any] | None = None, **dataset_kw: Any
) -> Any:
    """Read dataset ``name`` at ``root`` and wrap it as a :class:`export.train.data.PairedDataset`.

    Args:
        name: a key of :data:`READERS`.
        root: the dataset folder in its native layout.
        spec: an :class:`export.train.data.PairSpec` whose modality matches the reader's.
        options: keyword options of the reader (e.g. ``{"split": "test"}``).
        dataset_kw: keyword arguments of ``PairedDataset`` (augment, seed, train, skip_bad).
    """
    from export.train.data import PairedDataset

    info = reader_info(name)
    if spec.modality != info.modality:
        raise InputError(f"dataset {name!r} pairs images with {info.modality}, but the spec is for {spec.modality}")
    records = _resolve(info.records)(root, **(options or {}))
    loader = _resolve(info.loader) if info.loader else None
    return PairedDataset(records, spec, loader=loader, **dataset_kw)
