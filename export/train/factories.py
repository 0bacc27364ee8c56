"""Dataset factories for ``TrainConfig.train_data`` / ``val_data`` (plain JSON keyword arguments).

A training config names a factory and its keyword arguments, e.g.::

    "train_data": {"factory": "export.train.factories:native_dataset",
                   "kwargs": {"name": "audioset", "root": "/data/audioset", "model": "imagebind_huge",
                              "options": {"split": "balanced_train"}}}
    "train_data": {"factory": "export.train.factories:jsonl_dataset",
                   "kwargs": {"manifest": "/data/pairs.jsonl", "modality": "thermal", "model": "edge_small"}}

Both build the row shapes and preprocessing constants from the model config
(:meth:`export.train.data.PairSpec.from_config`), so training sees exactly the arrays the
runtime makes on the device.
"""

from __future__ import annotations

from typing import Any

from export.config import load_config
from export.train.augment import make_augmenter
from export.train.data import PairedDataset, PairSpec, read_manifest
from export.train.datasets import open_dataset, reader_info


def _spec(model: str, modality: str, preprocess: dict[str, Any] | None, vision_preprocess: dict[str, Any] | None,
          train: bool) -> PairSpec:  # fmt: skip
    clip = "random" if train else "center"
    return PairSpec.from_config(load_config(model), modality, preprocess, vision_preprocess, audio_clip=clip)


def native_dataset(
    name: str,
    root: str,
    model: str,
    *,
    options: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    vision_preprocess: dict[str, Any] | None = None,
    train: bool = True,
    augment: bool = True,
    seed: int = 0,
    skip_bad: bool = True,
) -> PairedDataset:
    """A dataset in its native layout (``audioset``, ``sunrgbd``, ``llvip``, ``ego4d``) for ``model``.

    Args:
        name: reader name (:data:`export.train.datasets.READERS`).
        root: the dataset folder.
        model: model config preset or JSON path whose towers fix the row shapes.
        options: reader options (split, hop, ...).
        preprocess / vision_preprocess: overrides of the runtime's preprocessing constants.
        train: training rows (augmentation, random audio clip) or evaluation rows (center clip).
        augment: apply the modality's default augmentations when training.
        seed: base seed of the per-item random streams.
        skip_bad: replace unreadable rows by the next readable one (counted and logged).
    """
    spec = _spec(model, reader_info(name).modality, preprocess, vision_preprocess, train)
    aug = make_augmenter(spec) if train and augment else None
    return open_dataset(name, root, spec, options=options, augment=aug, seed=seed, train=train, skip_bad=skip_bad)


def jsonl_dataset(
    manifest: str,
    modality: str,
    model: str,
    *,
    preprocess: dict[str, Any] | None = None,
    vision_preprocess: dict[str, Any] | None = None,
    train: bool = True,
    augment: bool = True,
    seed: int = 0,
    skip_bad: bool = True,
) -> PairedDataset:
    """A paired-manifest JSONL file (``{"image": ..., "<modality>": ..., "caption": ...}`` per line).

    Arguments as :func:`native_dataset`; malformed lines are dropped with a count when ``skip_bad``.
    """
    spec = _spec(model, modality, preprocess, vision_preprocess, train)
    read = read_manifest(manifest, modality, skip_bad=skip_bad)
    aug = make_augmenter(spec) if train and augment else None
    return PairedDataset(read.records, spec, augment=aug, seed=seed, train=train, skip_bad=skip_bad)
