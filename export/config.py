"""Model-family configuration: frozen dataclasses, presets and the official kwargs format.

A :class:`ModelConfig` holds one :class:`TowerConfig` per modality. Three sources
are accepted by :func:`load_config`:

* a preset name (``export/configs/<name>.json``, read on demand);
* a path to one of our own JSON files (the layout :func:`config_to_dict` writes);
* a JSON file of the official ``ImageBindModel(**kwargs)`` constructor arguments,
  either ``{"kwargs": {...}, ...}`` (other top-level keys are metadata) or a flat
  object of the kwargs. A kwarg that is absent takes its ``imagebind_huge`` value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.config_util import config_from_dict, config_to_dict
from runtime.errors import ConfigError

MODALITIES: tuple[str, ...] = ("vision", "text", "audio", "depth", "thermal", "imu")
CONFIG_DIR = Path(__file__).parent / "configs"
HUGE_PRESET = "imagebind_huge"


@dataclass(frozen=True)
class TowerConfig:
    """One modality's encoder.

    Attributes:
        embed_dim: transformer width E.
        num_blocks: number of transformer blocks N.
        num_heads: attention heads H (E must be a multiple of H).
        drop_path: maximum stochastic-depth rate (training only; block i uses i/(N-1) of it).
        bias_kv: append one learned key/value row in every attention layer.
        input_shape: one row's input shape without the batch axis, e.g. vision
            ``(3, frames, 224, 224)``, text ``(77,)``, audio ``(1, mel_bins, frames)``,
            depth/thermal ``(1, 224, 224)``, imu ``(channels, samples)``.
        kernel_size: patch kernel: vision ``(T, kh, kw)``, audio/depth/thermal
            ``(kh, kw)``, imu ``(window,)``; empty for text.
        stride: patch stride (same rank as ``kernel_size``; only audio differs from
            the kernel in the official family); empty means equal to the kernel.
        vocab_size: text vocabulary size; 0 for the other modalities.
    """

    embed_dim: int
    num_blocks: int
    num_heads: int
    drop_path: float = 0.0
    bias_kv: bool = False
    input_shape: tuple[int, ...] = ()
    kernel_size: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    vocab_size: int = 0

    @property
    def patch_stride(self) -> tuple[int, ...]:
        """The effective stride: ``stride`` or, when empty, ``kernel_size``."""
        return self.stride or self.kernel_size

    @property
    def patch_grid(self) -> tuple[int, ...]:
        """Patch counts per spatial/temporal axis of the stem (empty for text)."""
        dims = self.input_shape[1:]
        return tuple((n - k) // s + 1 for n, k, s in zip(dims, self.kernel_size, self.patch_stride, strict=True))

    @property
    def num_tokens(self) -> int:
        """Sequence length L seen by the trunk (cls token included where there is one)."""
        if self.vocab_size:
            return self.input_shape[0]
        return 1 + math.prod(self.patch_grid)


@dataclass(frozen=True)
class ModelConfig:
    """A whole ImageBind-family model.

    Attributes:
        name: identifier shown in bundles and logs.
        out_embed_dim: output embedding size D shared by every modality.
        vision, text, audio, depth, thermal, imu: the per-modality towers.
    """

    name: str
    out_embed_dim: int
    vision: TowerConfig
    text: TowerConfig
    audio: TowerConfig
    depth: TowerConfig
    thermal: TowerConfig
    imu: TowerConfig

    def __post_init__(self) -> None:
        if self.out_embed_dim <= 0:
            raise ConfigError(f"{self.name}: out_embed_dim must be positive, got {self.out_embed_dim}")
        for modality in MODALITIES:
            _validate_tower(self.name, modality, self.tower(modality))

    def tower(self, modality: str) -> TowerConfig:
        """Return the tower of ``modality`` (one of :data:`MODALITIES`)."""
        if modality not in MODALITIES:
            raise ConfigError(f"unknown modality {modality!r}: expected one of {', '.join(MODALITIES)}")
        return getattr(self, modality)

    @property
    def towers(self) -> dict[str, TowerConfig]:
        """All towers keyed by modality, in the official order."""
        return {m: self.tower(m) for m in MODALITIES}


def _validate_tower(name: str, modality: str, tower: TowerConfig) -> None:
    """Raise :class:`ConfigError` when a tower's fields are inconsistent."""
    label = f"{name}.{modality}"
    if min(tower.embed_dim, tower.num_blocks, tower.num_heads) <= 0:
        raise ConfigError(f"{label}: embed_dim, num_blocks and num_heads must be positive")
    if tower.embed_dim % tower.num_heads:
        raise ConfigError(f"{label}: embed_dim {tower.embed_dim} is not divisible by {tower.num_heads} heads")
    rank = {"vision": 4, "text": 1, "audio": 3, "depth": 3, "thermal": 3, "imu": 2}[modality]
    if len(tower.input_shape) != rank:
        raise ConfigError(f"{label}: input_shape needs {rank} entries, got {list(tower.input_shape)}")
    if (modality == "text") != (tower.vocab_size > 0):
        raise ConfigError(f"{label}: vocab_size must be set for text and only for text")
    if modality == "text":
        return
    if len(tower.kernel_size) != rank - 1 or len(tower.patch_stride) != rank - 1:
        raise ConfigError(f"{label}: kernel_size/stride need {rank - 1} entries each")
    if min(tower.patch_grid) <= 0:
        raise ConfigError(f"{label}: kernel {list(tower.kernel_size)} is larger than the input")
    if modality == "vision" and (tower.input_shape[1], tower.patch_stride) != (
        tower.kernel_size[0],
        tower.kernel_size,
    ):
        raise ConfigError(f"{label}: frames must equal the temporal kernel and stride must equal the kernel")
    if modality == "imu" and tower.input_shape[1] % tower.kernel_size[0]:
        raise ConfigError(f"{label}: imu samples must be a multiple of the window {tower.kernel_size[0]}")


def list_presets() -> list[str]:
    """Return the preset names available to :func:`load_config`, sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | Path) -> ModelConfig:
    """Load a model configuration.

    Args:
        name_or_path: a preset name (see :func:`list_presets`), a path to our own
            JSON config, or a path to a JSON file of official constructor kwargs.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: unknown preset, unreadable file, unknown key or invalid value
            (one line naming the file and the key).
    """
    text = str(name_or_path)
    path = Path(text)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{text}.json"
        if not path.is_file():
            presets = ", ".join(list_presets())
            raise ConfigError(f"unknown model config {text!r}: expected a JSON file or a preset ({presets})")
    return config_from_json(_read_json(path), where=path.name, default_name=path.stem)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file ({exc})") from None


def config_from_json(data: Any, where: str = "config", default_name: str = "model") -> ModelConfig:
    """Build a :class:`ModelConfig` from parsed JSON in either supported format.

    Args:
        data: our own layout (has modality keys), ``{"kwargs": {...}}`` or a flat
            object of official kwargs.
        where: label for error messages (e.g. the file name).
        default_name: the config name when ``data`` does not carry one.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if "kwargs" in data:
        return config_from_official_kwargs(data["kwargs"], name=default_name, where=where)
    if any(m in data for m in MODALITIES):
        return _config_from_own(data, where, default_name)
    return config_from_official_kwargs(data, name=default_name, where=where)


def _config_from_own(data: Mapping[str, Any], where: str, default_name: str) -> ModelConfig:
    merged: dict[str, Any] = {"name": default_name, **data}
    for modality in MODALITIES:
        tower = data.get(modality)
        if isinstance(tower, Mapping):
            merged[modality] = {**_modality_defaults(modality), **tower}
    return config_from_dict(ModelConfig, merged, where)


def _modality_defaults(modality: str) -> dict[str, Any]:
    """The official fixed layout fields of ``modality`` (input shape, kernel, stride, vocab)."""
    table: dict[str, dict[str, Any]] = {
        "vision": {"input_shape": [3, 2, 224, 224], "kernel_size": [2, 14, 14]},
        "text": {"input_shape": [77], "vocab_size": 49408},
        "audio": {"input_shape": [1, 128, 204], "kernel_size": [16, 16], "stride": [10, 10], "bias_kv": True},
        "depth": {"input_shape": [1, 224, 224], "kernel_size": [16, 16], "bias_kv": True},
        "thermal": {"input_shape": [1, 224, 224], "kernel_size": [16, 16], "bias_kv": True},
        "imu": {"input_shape": [6, 2000], "kernel_size": [8], "bias_kv": True},
    }
    return dict(table[modality])


def _official_defaults() -> dict[str, Any]:
    """Official kwargs with the ``imagebind_huge()`` values."""
    return {
        "video_frames": 2, "kernel_size": [2, 14, 14], "audio_kernel_size": 16, "audio_stride": 10,
        "out_embed_dim": 1024, "vision_embed_dim": 1280, "vision_num_blocks": 32, "vision_num_heads": 16,
        "audio_embed_dim": 768, "audio_num_blocks": 12, "audio_num_heads": 12, "audio_num_mel_bins": 128,
        "audio_target_len": 204, "audio_drop_path": 0.1, "text_embed_dim": 1024, "text_num_blocks": 24,
        "text_num_heads": 16, "depth_embed_dim": 384, "depth_kernel_size": 16, "depth_num_blocks": 12,
        "depth_num_heads": 8, "depth_drop_path": 0.0, "thermal_embed_dim": 768, "thermal_kernel_size": 16,
        "thermal_num_blocks": 12, "thermal_num_heads": 12, "thermal_drop_path": 0.0, "imu_embed_dim": 512,
        "imu_kernel_size": 8, "imu_num_blocks": 6, "imu_num_heads": 8, "imu_drop_path": 0.7,
    }  # fmt: skip


def config_from_official_kwargs(kwargs: Any, name: str = "official", where: str = "kwargs") -> ModelConfig:
    """Map official ``ImageBindModel`` constructor kwargs onto a :class:`ModelConfig`.

    Args:
        kwargs: the constructor keyword arguments; absent ones take their
            ``imagebind_huge`` values. ``imu_kernel_size`` is accepted and unused
            (the official IMU patch is 8 samples, hard-coded).
        name: the resulting config name.
        where: label for error messages.

    Raises:
        ConfigError: an unknown kwarg (named) or an invalid value.
    """
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where}: 'kwargs' must be a JSON object, got {type(kwargs).__name__}")
    known = _official_defaults()
    unknown = [k for k in kwargs if k not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown official kwarg {unknown[0]!r} (valid: {', '.join(known)})")
    kw = {**known, **kwargs}
    kernel = kw["kernel_size"]
    if not isinstance(kernel, (list, tuple)) or len(kernel) != 3:
        raise ConfigError(f"{where}: kernel_size must be a list of 3 integers, got {kernel!r}")

    def tower(m: str, **extra: Any) -> dict[str, Any]:
        base = {f: kw[f"{m}_{f}"] for f in ("embed_dim", "num_blocks", "num_heads")}
        drop = kw.get(f"{m}_drop_path", 0.0)
        return {**_modality_defaults(m), **base, "drop_path": drop, **extra}

    def square(key: str) -> list[int]:
        return [kw[key], kw[key]]

    data = {
        "name": name,
        "out_embed_dim": kw["out_embed_dim"],
        "vision": tower("vision", input_shape=[3, kw["video_frames"], 224, 224], kernel_size=list(kernel)),
        "text": tower("text"),
        "audio": tower(
            "audio",
            input_shape=[1, kw["audio_num_mel_bins"], kw["audio_target_len"]],
            kernel_size=square("audio_kernel_size"),
            stride=square("audio_stride"),
        ),
        "depth": tower("depth", kernel_size=square("depth_kernel_size")),
        "thermal": tower("thermal", kernel_size=square("thermal_kernel_size")),
        "imu": tower("imu"),
    }
    return config_from_dict(ModelConfig, data, where)


def save_config(cfg: ModelConfig, path: str | Path) -> None:
    """Write ``cfg`` as our own JSON layout (readable by :func:`load_config`)."""
    text = json.dumps(config_to_dict(cfg), indent=2)
    text = re.sub(r"\[\s*([-\d.,\s]*?)\s*\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    Path(path).write_text(text + "\n", encoding="utf-8")
