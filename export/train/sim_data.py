"""Paired sets from the synthetic world (``sim://random``) for the miniature ImageBind.

Stage 1 pairs each RGB frame with the caption of its instant; stage 2 pairs each
audio/depth/thermal/IMU window with the RGB frame nearest its centre. Every array is
made by the runtime's own code: :class:`runtime.windowing.Windower` cuts the streams and
:func:`runtime.window_input.window_to_input` preprocesses each window, driven by
modality specs built exactly as the bundle export writes them
(:func:`runtime.inputs.default_preprocess` / ``default_window``), so the exported
encoders see at run time the very inputs they were trained on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from export.config import ModelConfig, load_config
from runtime import inputs
from runtime.manifest import ModalitySpec, TensorSpec
from runtime.types import Modality, Samples
from runtime.window_config import WindowConfig
from runtime.window_input import window_to_input
from runtime.windowing import Windower
from sensors.sim import SimRecording, generate
from sensors.sim_world import EVENT_CLASSES, GAP_CAPTION, Event

# Preprocessing overrides of the miniature model (written into the bundle's manifest by the export).
MINI_PREPROCESS: dict[str, dict[str, Any]] = {
    "vision": {"size": 64},
    "depth": {"size": 64, "invalid_depth_m": 50.0},  # dropouts read as far, not as 1 cm spikes
    "thermal": {"size": 64},
    "audio": {"fbank": {"num_mel_bins": 64}},
}
SENSORS: tuple[Modality, ...] = (Modality.AUDIO, Modality.DEPTH, Modality.THERMAL, Modality.IMU)
STREAM_OF = {Modality.VISION: "rgb", Modality.AUDIO: "audio", Modality.DEPTH: "depth",
             Modality.THERMAL: "thermal", Modality.IMU: "imu"}  # fmt: skip
LABELS: tuple[str, ...] = tuple(c.label for c in EVENT_CLASSES)
CAPTIONS: tuple[str, ...] = (*(c.caption for c in EVENT_CLASSES), GAP_CAPTION)  # index = label id
GAP = len(EVENT_CLASSES)  # label id of "no event" (caption GAP_CAPTION)
NO_LABEL = -1  # a window no single class (or the gap) covers for at least ``min_cover``
RGB_HZ = 2.0


@dataclass(frozen=True)
class PairSettings:
    """How windows are cut for training/evaluation (the preprocessing itself is the manifest's).

    Attributes:
        duration_s: seconds of ``sim://random`` per seed.
        hop_s: hop of the audio and IMU windows, seconds (the runtime streams at 1 s; training
            may use a denser hop for more pairs of the same windows).
        frame_stride: use every Nth depth/thermal frame (depth 10 Hz, thermal 9 Hz; RGB is 2 Hz).
        min_cover: fraction of a window one class (or the gap) must cover to label it.
    """

    duration_s: float = 60.0
    hop_s: float = 0.5
    frame_stride: int = 5
    min_cover: float = 0.5


def modality_specs(
    cfg: ModelConfig, modalities: Sequence[Modality], overrides: Mapping[str, Mapping[str, Any]] = MINI_PREPROCESS
) -> dict[Modality, ModalitySpec]:
    """Manifest-equivalent specs (window + preprocess) of ``modalities``, without model files."""
    out = {}
    for mod in modalities:
        row = tuple(cfg.tower(mod.value).input_shape)
        pre = inputs.default_preprocess(mod, row, overrides.get(mod.value))
        out[mod] = ModalitySpec(mod, TensorSpec("x", ("batch", *row), "float32"),
                                TensorSpec("y", ("batch", cfg.out_embed_dim), "float32"), 1.0, 1,
                                inputs.default_window(mod, pre), pre, ())  # fmt: skip
    return out


@dataclass(frozen=True)
class Windows:
    """One modality's preprocessed windows of a set.

    Attributes:
        x: (M, *row) float32 encoder inputs.
        image: (M,) int64 index of the paired RGB frame in :attr:`SimSet.images`.
        label: (M,) int64 class id (index into :data:`LABELS`), :data:`GAP` or :data:`NO_LABEL`.
    """

    x: NDArray[np.float32]
    image: NDArray[np.int64]
    label: NDArray[np.int64]


@dataclass(frozen=True)
class SimSet:
    """Paired arrays from some sim seeds.

    Attributes:
        seeds: the ``sim://random`` seeds.
        images: (N, 3, S, S) float32 preprocessed RGB frames (the vision row's single frame).
        label: (N,) int64 class id of each frame's instant, :data:`GAP` between events;
            its caption is ``CAPTIONS[label]``.
        windows: per sensor modality, its windows paired with ``images``.
    """

    seeds: tuple[int, ...]
    images: NDArray[np.float32]
    label: NDArray[np.int64]
    windows: dict[Modality, Windows]
    key: str = ""


def window_label(timeline: Sequence[Event], t0_s: float, t1_s: float, min_cover: float) -> int:
    """Class id covering >= ``min_cover`` of ``[t0_s, t1_s)``, :data:`GAP`, or :data:`NO_LABEL`.

    A zero-length span (a camera frame) takes the class active at ``t0_s``.
    """
    if t1_s <= t0_s:
        active = [e.label for e in timeline if e.start_s <= t0_s < e.end_s]
        return LABELS.index(active[0]) if active else GAP
    span = t1_s - t0_s
    cover = {e.label: 0.0 for e in timeline}
    for e in timeline:
        cover[e.label] += max(0.0, min(e.end_s, t1_s) - max(e.start_s, t0_s))
    best = max(cover, key=lambda k: cover[k], default="")
    if best and cover[best] >= min_cover * span:
        return LABELS.index(best)
    return GAP if span - sum(cover.values()) >= min_cover * span else NO_LABEL


def _cut(rec: SimRecording, spec: ModalitySpec, settings: PairSettings) -> list[Any]:
    """The runtime's windows of one stream of ``rec`` (whole stream pushed at once, t = sim clock)."""
    stream = rec.streams[STREAM_OF[spec.modality]]
    if spec.modality in (Modality.AUDIO, Modality.IMU):
        over: dict[str, Any] = {"hop_s": settings.hop_s}
    elif spec.modality is Modality.VISION:
        over = {}
    else:
        over = {"frame_stride": settings.frame_stride}
    windower = Windower(stream.info, WindowConfig.from_spec(spec, over))
    return windower.push(Samples(stream.info.stream_id, spec.modality, stream.t_ns, stream.values, stream.t_ns))


def _seed_arrays(seed: int, specs: Mapping[Modality, ModalitySpec], settings: PairSettings) -> dict[str, Any]:
    """One seed: images (n, 3, S, S), labels (n,), and per modality (x, image index, label)."""
    rec = generate("random", seed=seed, duration_s=settings.duration_s,
                   streams=tuple(STREAM_OF[m] for m in specs))  # fmt: skip
    frames = _cut(rec, specs[Modality.VISION], settings)
    vis = specs[Modality.VISION]
    vis_cfg = inputs.preprocess_config(vis.modality, vis.preprocess)
    images = np.stack([window_to_input(w, vis, vis_cfg)[:, 0] for w in frames])
    labels = np.array([window_label(rec.timeline, w.start_ns / 1e9, w.start_ns / 1e9, 0.5) for w in frames])
    out: dict[str, Any] = {"images": images, "label": labels}
    for mod, spec in specs.items():
        if mod is Modality.VISION:
            continue
        wins = _cut(rec, spec, settings)
        if spec.window.get("sample_rate_hz") is None:
            spans = [(w.start_ns / 1e9, w.start_ns / 1e9) for w in wins]
        else:
            spans = [(w.start_ns / 1e9, w.end_ns / 1e9) for w in wins]
        cfg = inputs.preprocess_config(mod, spec.preprocess)
        x = np.stack([window_to_input(w, spec, cfg) for w in wins])
        centre = np.array([(a + b) / 2 for a, b in spans])
        image = np.clip(np.rint(centre * RGB_HZ).astype(np.int64), 0, len(images) - 1)
        label = np.array([window_label(rec.timeline, a, b, settings.min_cover) for a, b in spans], np.int64)
        out[mod.value] = (x, image, label)
    return out


def build_set(seeds: Sequence[int], specs: Mapping[Modality, ModalitySpec], settings: PairSettings) -> SimSet:
    """Generate and preprocess every seed; ``specs`` must include vision (the anchor frames)."""
    parts = [_seed_arrays(s, specs, settings) for s in seeds]
    offsets = np.cumsum([0] + [len(p["images"]) for p in parts[:-1]])
    windows = {}
    for mod in specs:
        if mod is Modality.VISION:
            continue
        x = np.concatenate([p[mod.value][0] for p in parts])
        image = np.concatenate([p[mod.value][1] + off for p, off in zip(parts, offsets, strict=True)])
        label = np.concatenate([p[mod.value][2] for p in parts])
        windows[mod] = Windows(x.astype(np.float32), image, label)
    images = np.concatenate([p["images"] for p in parts]).astype(np.float32)
    return SimSet(tuple(seeds), images, np.concatenate([p["label"] for p in parts]).astype(np.int64), windows)


def save_set(data: SimSet, path: Path) -> None:
    """Write ``data`` as one ``.npz`` (no pickles)."""
    arrays: dict[str, NDArray[Any]] = {"seeds": np.asarray(data.seeds), "images": data.images, "label": data.label,
                                       "key": np.asarray(data.key)}  # fmt: skip
    for mod, w in data.windows.items():
        arrays |= {f"{mod.value}.x": w.x, f"{mod.value}.image": w.image, f"{mod.value}.label": w.label}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_set(path: Path) -> SimSet:
    """Read a set written by :func:`save_set`."""
    with np.load(path, allow_pickle=False) as z:
        mods = sorted({k.split(".")[0] for k in z.files if "." in k})
        windows = {Modality(m): Windows(z[f"{m}.x"], z[f"{m}.image"], z[f"{m}.label"]) for m in mods}
        key = str(z["key"]) if "key" in z.files else ""
        return SimSet(tuple(int(s) for s in z["seeds"]), z["images"], z["label"], windows, key)


def cached_set(path: Path, seeds: Sequence[int], cfg: ModelConfig, settings: PairSettings,
               modalities: Sequence[Modality] = SENSORS) -> SimSet:  # fmt: skip
    """:func:`load_set` of ``path`` when it was made from the same seeds, specs and settings, else build and save it."""
    specs = modality_specs(cfg, (Modality.VISION, *modalities))
    specs_key = {m.value: [s.window, s.preprocess] for m, s in specs.items()}
    key = json.dumps({"seeds": list(seeds), "settings": asdict(settings), "specs": specs_key}, sort_keys=True)
    if path.is_file():
        data = load_set(path)
        if data.key == key:
            return data
    data = replace(build_set(seeds, specs, settings), key=key)
    save_set(data, path)
    return data


class CaptionPairs(Dataset):
    """Stage 1: ``{"image": (3, S, S) float32, "caption": str, "label": int, "index": int}`` per RGB frame."""

    def __init__(self, data: SimSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        label = int(self.data.label[index])
        return {"image": torch.from_numpy(self.data.images[index]), "caption": CAPTIONS[label], "label": label,
                "index": index}  # fmt: skip


class SensorPairs(Dataset):
    """Stage 2: ``{"image", "<modality>": (*row) float32, "caption", "label", "index"}`` per window.

    ``caption``/``label`` are the window's (its majority class); windows without one
    (:data:`NO_LABEL`) take the caption of their paired frame, for the text-paired control.
    """

    def __init__(self, data: SimSet, modality: Modality) -> None:
        self.data, self.modality = data, modality
        self.windows = data.windows[modality]

    def __len__(self) -> int:
        return len(self.windows.x)

    def __getitem__(self, index: int) -> dict[str, Any]:
        w = self.windows
        image = int(w.image[index])
        label = int(w.label[index]) if w.label[index] != NO_LABEL else int(self.data.label[image])
        return {"image": torch.from_numpy(self.data.images[image]), self.modality.value: torch.from_numpy(w.x[index]),
                "caption": CAPTIONS[label], "label": label, "index": index}  # fmt: skip


def sim_pairs(cache: str, modality: str = "text", config: str = "mini_sim", seeds: Sequence[int] = (),
              duration_s: float = 60.0) -> Dataset:  # fmt: skip
    """Dataset factory for ``TrainConfig.train_data``: stage 1 when ``modality`` is text, else stage 2.

    Args:
        cache: ``.npz`` path of the set (built from ``seeds`` when missing or different).
        modality: ``"text"`` (RGB frames + captions) or a sensor modality name.
        config: model config preset or path (fixes the encoders' input rows).
        seeds: ``sim://random`` seeds.
        duration_s: seconds per seed.
    """
    data = cached_set(Path(cache), seeds, load_config(config), PairSettings(duration_s=duration_s))
    return CaptionPairs(data) if modality == "text" else SensorPairs(data, Modality(modality))
