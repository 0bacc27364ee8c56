"""Paired training data: the JSONL paired manifest, model-ready loading and collation.

Every array is made by the runtime's own numpy preprocessing (``runtime.preprocess``),
then turned into a torch tensor, so training sees exactly what inference sees.

Paired-manifest format (one JSON object per line, ``#`` lines and blank lines ignored)::

    {"image": "img/0001.jpg", "audio": "wav/0001.wav", "caption": "a dog barks"}
    {"image": "rgb/7.png", "depth": "d/7.png", "preprocess": {"focal_px": 529.5}}

Keys: ``image`` (required), the paired modality (required: audio, depth, thermal or
imu), ``caption`` (optional str), ``start_s`` (optional: audio clip / IMU window start
in seconds), ``rate_hz`` (optional: IMU ``.npy`` sample rate), ``preprocess``
(optional per-row overrides of the modality's preprocessing constants), ``id``
(optional label). Keys naming other modalities are ignored; any other key is an
error. Paths are relative to the manifest's folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from export.config import MODALITIES, ModelConfig
from export.train.datasets.files import load_image_row, load_target
from runtime.config_util import config_to_dict
from runtime.errors import EdgebindError, InputError
from runtime.inputs import default_preprocess, preprocess_config
from runtime.types import Modality

logger = logging.getLogger("edgebind.train.data")

PAIRED_MODALITIES: tuple[str, ...] = ("audio", "depth", "thermal", "imu")
AUDIO_CLIP_CHOICES = ("random", "center", "first")
_OPTIONAL_KEYS = {"caption", "start_s", "rate_hz", "preprocess", "id"}
_MAX_LOGGED_ROWS = 10


class ManifestError(InputError):
    """A paired-manifest line is malformed or names a missing file (message: ``file:line: ...``)."""


@dataclass(frozen=True)
class PairSpec:
    """What one paired row must look like: the modality, row shapes and every preprocessing constant.

    Attributes:
        modality: the paired modality, one of :data:`PAIRED_MODALITIES`.
        row_shape: the modality encoder's per-row input shape, e.g. audio ``(1, 128, 204)``.
        image_shape: the image row shape ``(3, size, size)`` (a still frame; the model repeats it).
        preprocess: the modality's preprocessing constants as a JSON dict (manifest style).
        vision_preprocess: the vision preprocessing constants as a JSON dict.
        audio_clip: which clip of a whole audio file a row uses: "random" (training; seeded
            per item), "center" or "first". Rows with ``start_s`` take the clip starting there.
    """

    modality: str
    row_shape: tuple[int, ...]
    image_shape: tuple[int, int, int]
    preprocess: Mapping[str, Any]
    vision_preprocess: Mapping[str, Any]
    audio_clip: str = "random"

    def __post_init__(self) -> None:
        if self.modality not in PAIRED_MODALITIES:
            raise InputError(f"paired modality {self.modality!r}: expected one of {', '.join(PAIRED_MODALITIES)}")
        if self.audio_clip not in AUDIO_CLIP_CHOICES:
            raise InputError(f"audio_clip {self.audio_clip!r}: expected one of {', '.join(AUDIO_CLIP_CHOICES)}")

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        modality: str,
        preprocess: Mapping[str, Any] | None = None,
        vision_preprocess: Mapping[str, Any] | None = None,
        audio_clip: str = "random",
    ) -> PairSpec:
        """Derive the spec from a model config: shapes from the towers, constants from the runtime defaults.

        The shape-defining constants (mel bins, target frames, image size, IMU samples) are set
        from the tower's ``input_shape``; ``preprocess`` / ``vision_preprocess`` override the rest
        (e.g. ``{"baseline_m": 0.095}``). Raises ConfigError when the result does not make rows
        of the tower's shape.
        """
        if modality not in PAIRED_MODALITIES:
            raise InputError(f"paired modality {modality!r}: expected one of {', '.join(PAIRED_MODALITIES)}")
        row = tuple(cfg.tower(modality).input_shape)
        vision_row = tuple(cfg.tower("vision").input_shape)
        mod_over = merge_dicts(shape_overrides(modality, row), dict(preprocess or {}))
        mod_pre = default_preprocess(Modality(modality), row, mod_over)
        vis_over = merge_dicts(shape_overrides("vision", vision_row), dict(vision_preprocess or {}))
        vis_pre = default_preprocess(Modality.VISION, vision_row, vis_over)
        image_shape = (vision_row[0], vision_row[2], vision_row[3])
        return cls(modality, row, image_shape, mod_pre, vis_pre, audio_clip)  # type: ignore[arg-type]


def merge_dicts(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``over`` wins; nested dicts merge key by key (inputs untouched)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def shape_overrides(modality: str, row_shape: Sequence[int]) -> dict[str, Any]:
    """The preprocessing keys that set a row's shape: audio ``(1, mels, frames)``, vision ``(3, T, S, S)``, ..."""
    r = tuple(row_shape)
    if modality == "audio":
        return {"fbank": {"num_mel_bins": r[1]}, "target_frames": r[2]}
    if modality == "vision":
        return {"frames": r[1], "size": r[2]}
    if modality == "imu":
        return {"target_samples": r[1]}
    if modality in ("depth", "thermal"):
        return {"size": r[1]}
    raise InputError(f"no file preprocessing for modality {modality!r}")


@dataclass(frozen=True)
class PairRecord:
    """One (image, modality) pair on disk.

    Attributes:
        image: image file (any format Pillow reads).
        target: the paired modality's file (wav; depth png/npy; thermal png/npy/jpg; imu npy/csv).
        caption: optional text, "" if none.
        start_s: audio clip / IMU window start inside ``target`` in seconds; None = whole-file rules.
        rate_hz: IMU sample rate for files without timestamps (``.npy``).
        preprocess: per-row overrides of the modality's preprocessing constants (e.g. depth ``focal_px``).
        source: where the row came from, for error messages (``manifest.jsonl:12``, a scene folder...).
    """

    image: Path
    target: Path
    caption: str = ""
    start_s: float | None = None
    rate_hz: float | None = None
    preprocess: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class ManifestRead:
    """The rows of a manifest that passed, and one error line per dropped row (``skip_bad``)."""

    records: list[PairRecord]
    dropped: list[str]


def read_manifest(
    path: str | Path, modality: str, *, skip_bad: bool = False, check_files: bool = True
) -> ManifestRead:
    """Parse a paired JSONL manifest.

    Args:
        path: the ``.jsonl`` file; relative paths inside resolve against its folder.
        modality: the paired modality every row must carry.
        skip_bad: drop malformed rows (counted, logged) instead of raising on the first one.
        check_files: require both files of every row to exist.

    Returns:
        The records in file order and the dropped-row messages.

    Raises:
        ManifestError: ``<file>:<line>: <what is wrong>`` (one line) unless ``skip_bad``;
            also when no row is usable.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc})") from None
    records: list[PairRecord] = []
    dropped: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            records.append(parse_manifest_line(line, modality, path.parent, f"{path}:{number}", check_files))
        except ManifestError as exc:
            if not skip_bad:
                raise
            dropped.append(str(exc))
    log_dropped(dropped, str(path))
    if not records:
        raise ManifestError(f"{path}: no usable {modality} rows ({len(dropped)} dropped)")
    return ManifestRead(records, dropped)


def parse_manifest_line(line: str, modality: str, base: Path, where: str, check_files: bool = True) -> PairRecord:
    """One manifest line to a :class:`PairRecord`; raises a one-line ManifestError naming ``where``."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(row).__name__}")
    unknown = sorted(set(row) - {"image", modality} - _OPTIONAL_KEYS - set(MODALITIES))
    if unknown:
        raise ManifestError(f"{where}: unknown key {unknown[0]!r}")
    paths = [_path_field(row, key, base, where, check_files) for key in ("image", modality)]
    caption = row.get("caption", "")
    if not isinstance(caption, str):
        raise ManifestError(f"{where}: 'caption' must be a string, got {type(caption).__name__}")
    pre = row.get("preprocess", {})
    if not isinstance(pre, dict):
        raise ManifestError(f"{where}: 'preprocess' must be an object")
    start_s = _number_field(row, "start_s", where, minimum=0.0)
    rate_hz = _number_field(row, "rate_hz", where, minimum=1e-9)
    return PairRecord(paths[0], paths[1], caption, start_s, rate_hz, pre, where)


def _path_field(row: Mapping[str, Any], key: str, base: Path, where: str, check: bool) -> Path:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where}: missing or empty {key!r} path")
    path = base / value
    if check and not path.is_file():
        raise ManifestError(f"{where}: {key} file not found: {path}")
    return path


def _number_field(row: Mapping[str, Any], key: str, where: str, minimum: float) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ManifestError(f"{where}: {key!r} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def log_dropped(dropped: Sequence[str], what: str) -> None:
    """Log the first dropped rows one per line, then a count."""
    for message in dropped[:_MAX_LOGGED_ROWS]:
        logger.warning("dropped row: %s", message)
    if dropped:
        logger.warning("%s: dropped %d bad row(s)", what, len(dropped))


def write_manifest(records: Iterable[PairRecord], path: str | Path, modality: str) -> int:
    """Write records as a paired JSONL manifest (paths relative to its folder where possible); returns rows."""
    path = Path(path)
    base = path.parent.resolve()
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for rec in records:
            row: dict[str, Any] = {"image": _relative(rec.image, base), modality: _relative(rec.target, base)}
            if rec.caption:
                row["caption"] = rec.caption
            for key in ("start_s", "rate_hz"):
                if getattr(rec, key) is not None:
                    row[key] = getattr(rec, key)
            if rec.preprocess:
                row["preprocess"] = dict(rec.preprocess)
            out.write(json.dumps(row) + "\n")
            count += 1
    return count


def _relative(path: Path, base: Path) -> str:
    resolved = path.resolve()
    try:
        return resolved.relative_to(base).as_posix()
    except ValueError:
        return str(resolved)


TargetLoader = Callable[[PairRecord, Any, PairSpec, np.random.Generator], NDArray[np.float32]]
"""``(record, modality config dataclass, spec, rng) -> one model-ready row (row_shape) float32``."""


class PairedDataset(Dataset):
    """Model-ready (image, modality) pairs.

    Items are ``{"image": (3, S, S) float32, <modality>: row_shape float32, "caption": str,
    "index": int}``; ``index`` is the dataset index of the row actually returned.

    Args:
        records: the pairs.
        spec: shapes and preprocessing constants.
        augment: ``augment(item, generator) -> item`` applied to the tensors when ``train``.
        seed: base seed; each item draws from ``(seed, epoch, index)``, so results do not
            depend on worker count or order.
        train: enables ``augment`` and random audio clips (else the center clip).
        skip_bad: an unreadable row is logged and replaced by the next readable one.
        loader: the modality loader (:data:`TargetLoader`); the default reads the formats
            of :func:`export.train.datasets.files.load_target`.
    """

    def __init__(
        self,
        records: Sequence[PairRecord],
        spec: PairSpec,
        *,
        augment: Callable[[dict[str, Any], torch.Generator], dict[str, Any]] | None = None,
        seed: int = 0,
        train: bool = True,
        skip_bad: bool = False,
        loader: TargetLoader | None = None,
    ) -> None:
        if not records:
            raise InputError("PairedDataset: no records")
        self.records = list(records)
        self.spec = spec if train or spec.audio_clip != "random" else dataclasses.replace(spec, audio_clip="center")
        self.augment = augment
        self.seed = seed
        self.train = train
        self.skip_bad = skip_bad
        self.loader = loader or load_target
        self.epoch = 0
        self.bad_rows = 0
        self._cfg = preprocess_config(Modality(spec.modality), spec.preprocess)
        self._vision_cfg = preprocess_config(Modality.VISION, spec.vision_preprocess)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Change the per-item random streams (call once per epoch, as with DistributedSampler)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        tries = len(self.records) if self.skip_bad else 1
        for offset in range(tries):
            i = (index + offset) % len(self.records)
            try:
                return self.load_item(i)
            except (EdgebindError, OSError, ValueError) as exc:
                if not self.skip_bad:
                    raise
                self.bad_rows += 1
                logger.warning("skipping unreadable row %s: %s", self.records[i].source or i, exc)
        raise InputError(f"PairedDataset: no readable row from index {index} on")

    def load_item(self, index: int) -> dict[str, Any]:
        """Load row ``index`` without skipping (see the class docstring for the layout)."""
        rec = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        cfg = self._row_config(rec)
        image = load_image_row(rec.image, self._vision_cfg)
        target = self.loader(rec, cfg, self.spec, rng)
        self._check_shape(rec, "image", image.shape, self.spec.image_shape)
        self._check_shape(rec, self.spec.modality, target.shape, self.spec.row_shape)
        item: dict[str, Any] = {"image": torch.from_numpy(image), self.spec.modality: torch.from_numpy(target)}
        if self.train and self.augment is not None:
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            item = self.augment(item, generator)
        item["caption"] = rec.caption
        item["index"] = index
        return item

    def _row_config(self, rec: PairRecord) -> Any:
        if not rec.preprocess:
            return self._cfg
        merged = merge_dicts(config_to_dict(self._cfg), dict(rec.preprocess))
        return preprocess_config(Modality(self.spec.modality), merged)

    @staticmethod
    def _check_shape(rec: PairRecord, what: str, got: tuple[int, ...], want: tuple[int, ...]) -> None:
        if tuple(got) != tuple(want):
            raise InputError(f"{rec.source or rec.target}: {what} row has shape {tuple(got)}, expected {tuple(want)}")


def collate_pairs(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack a list of dataset items into a batch.

    Returns:
        ``{"image": (B, 3, S, S), <modality>: (B, *row), "caption": list[str], "index": (B,) int64}``;
        every tensor key is stacked, other values become lists.

    Raises:
        InputError: empty batch or items with different keys.
    """
    if not items:
        raise InputError("collate_pairs: empty batch")
    keys = list(items[0])
    if any(list(it) != keys for it in items):
        raise InputError("collate_pairs: items have different keys")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif key == "index":
            batch[key] = torch.tensor(values, dtype=torch.int64)
        else:
            batch[key] = list(values)
    return batch
