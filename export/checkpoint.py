"""Checkpoint files: safe loading, strict one-line-error loading, config inference, hashing."""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from export.config import MODALITIES, ModelConfig
from runtime.config_util import config_from_dict
from runtime.errors import ConfigError, EdgebindError

HINT = "is this a checkpoint of another config? pass --config"
_WRAPPER_KEYS = ("model", "state_dict")
# Heads of the released huge model per (modality, width); widths elsewhere need a config.
_HUGE_HEADS = {
    ("vision", 1280): 16, ("text", 1024): 16, ("audio", 768): 12,
    ("depth", 384): 8, ("thermal", 768): 12, ("imu", 512): 8,
}  # fmt: skip
_HUGE_DROP_PATH = {"audio": 0.1, "imu": 0.7}


class CheckpointError(EdgebindError):
    """A checkpoint file is unreadable, unsafe, or does not fit the model."""


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Args:
        path: a ``.pth``/``.pt`` file holding a flat ``{key: tensor}`` dict, or a dict
            whose ``"model"`` or ``"state_dict"`` entry is one.

    Returns:
        The flat state dict (tensors keep their stored dtype).

    Raises:
        CheckpointError: missing file, a pickle with non-tensor objects (refused by
            ``weights_only``), or content that is not a tensor dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"{path}: refused to unpickle non-tensor objects (weights_only): {first}"
        raise CheckpointError(msg) from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") from None
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    bad = next((k for k, v in obj.items() if not isinstance(v, Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"{path}: entry {bad!r} is a {type(obj[bad]).__name__}, not a tensor")
    return dict(obj)


def _shape(t: Tensor) -> str:
    return "[" + ",".join(str(n) for n in t.shape) + "]"


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Raise :class:`CheckpointError` naming the first missing/unexpected key or shape mismatch.

    Keys are checked in the model's order (missing or wrong shape), then the
    checkpoint's order (unexpected). The message is one line with both shapes.
    """
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            raise CheckpointError(f"checkpoint is missing {key} (expected shape {_shape(tensor)}, found none); {HINT}")
        found = state_dict[key]
        if tuple(found.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"checkpoint key {key}: expected shape {_shape(tensor)}, found {_shape(found)}; {HINT}"
            )
    for key, found in state_dict.items():
        if key not in expected:
            raise CheckpointError(
                f"checkpoint has unexpected key {key} (expected none, found shape {_shape(found)}); {HINT}"
            )


def load_checkpoint(model: nn.Module, state_dict: Mapping[str, Tensor], only_built: bool = True) -> None:
    """Load ``state_dict`` into ``model`` strictly (values are copied, dtype converted).

    Args:
        model: an :class:`~export.model.ImageBindModel` (may live on the meta device).
        state_dict: official-layout ``{key: tensor}``.
        only_built: drop the checkpoint entries of modalities the model did not
            build (``modality_<dict>.<m>.`` with ``m`` absent); the built ones stay strict.

    Raises:
        CheckpointError: one line naming the first bad key and both shapes.
    """
    if only_built:
        built = set(getattr(model, "modalities", MODALITIES))
        state_dict = {k: v for k, v in state_dict.items() if _modality_of(k) in built or not _modality_of(k)}
    check_state_dict(model, state_dict)
    model.load_state_dict(state_dict, strict=True)


def _modality_of(key: str) -> str:
    """``modality_trunks.audio.blocks...`` → ``audio``; '' for keys outside the four dicts."""
    parts = key.split(".")
    return parts[1] if len(parts) > 1 and parts[0].startswith("modality_") else ""


def state_dict_sha256(state_dict: Mapping[str, Tensor]) -> str:
    """Hex sha256 over keys (sorted), dtypes, shapes and raw tensor bytes.

    Raises:
        CheckpointError: a tensor has no data (meta device).
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key]
        if tensor.is_meta:
            raise CheckpointError(f"cannot hash {key}: tensor is on the meta device (no data)")
        header = f"{key}\0{str(tensor.dtype).removeprefix('torch.')}\0{_shape(tensor)}\0"
        digest.update(header.encode())
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def infer_config_from_state_dict(
    state_dict: Mapping[str, Tensor], name: str = "inferred", num_heads: Mapping[str, int] | None = None
) -> ModelConfig:
    """Derive a :class:`ModelConfig` from official-layout tensor shapes.

    Widths, block counts, bias_kv, kernels, vocabulary and output size come from
    shapes; input sizes are the official ones (224², 128x204 mel, 2000 IMU
    samples, 77 tokens) and are checked against the position-embedding lengths.
    Head counts are not visible in shapes: they default to the released huge
    model's (for its widths only); other widths need ``num_heads``. Drop-path
    rates (training only) take the huge values.

    Args:
        state_dict: all six modalities' entries.
        name: the config name.
        num_heads: per-modality head counts overriding the huge rule.

    Raises:
        ConfigError: a modality is missing, heads cannot be inferred, or the
            shapes are inconsistent with the official input sizes.
    """
    towers = {m: _infer_tower(state_dict, m, (num_heads or {}).get(m)) for m in MODALITIES}
    head_key = "modality_heads.vision.2.weight"
    data = {"name": name, "out_embed_dim": int(state_dict[head_key].shape[0]), **towers}
    cfg = config_from_dict(ModelConfig, data, "state dict")
    for m, tower in cfg.towers.items():
        pos = _pos_key(m)
        if int(state_dict[pos].shape[1]) != tower.num_tokens:
            raise ConfigError(f"state dict: {pos} has {state_dict[pos].shape[1]} tokens, config gives "
                              f"{tower.num_tokens}; {HINT}")  # fmt: skip
    return cfg


def _pos_key(m: str) -> str:
    if m in ("text", "imu"):
        return f"modality_preprocessors.{m}.pos_embed"
    return f"modality_preprocessors.{m}.pos_embedding_helper.pos_embed"


def _infer_tower(sd: Mapping[str, Tensor], m: str, heads: int | None) -> dict[str, object]:
    pos = _pos_key(m)
    if pos not in sd:
        raise ConfigError(f"state dict has no {pos}: cannot infer the {m} tower; pass --config")
    dim = int(sd[pos].shape[-1])
    pattern = re.compile(rf"^modality_trunks\.{m}\.blocks\.(\d+)\.")
    blocks = 1 + max((int(g.group(1)) for k in sd if (g := pattern.match(k))), default=-1)
    heads = heads or _HUGE_HEADS.get((m, dim))
    if heads is None:
        raise ConfigError(f"cannot infer num_heads of the {m} tower (width {dim}); pass --config")
    tower: dict[str, object] = {
        "embed_dim": dim, "num_blocks": blocks, "num_heads": heads,
        "drop_path": _HUGE_DROP_PATH.get(m, 0.0),
        "bias_kv": f"modality_trunks.{m}.blocks.0.attn.bias_k" in sd,
    }  # fmt: skip
    prefix = f"modality_preprocessors.{m}."
    if m == "vision":
        kernel = list(sd[prefix + "rgbt_stem.proj.1.weight"].shape[2:])
        tower.update(input_shape=[3, kernel[0], 224, 224], kernel_size=kernel)
    elif m == "text":
        vocab = int(sd[prefix + "token_embedding.weight"].shape[0])
        tower.update(input_shape=[int(sd[pos].shape[1])], vocab_size=vocab)
    elif m == "imu":
        window = int(sd[prefix + "imu_stem.proj.weight"].shape[1]) // 6
        tower.update(input_shape=[6, 2000], kernel_size=[window])
    else:
        stem = "depth_stem" if m == "depth" else "rgbt_stem"
        kernel = list(sd[f"{prefix}{stem}.proj.weight"].shape[2:])
        size = [1, 128, 204] if m == "audio" else [1, 224, 224]
        stride = [10, 10] if m == "audio" else []
        tower.update(input_shape=size, kernel_size=kernel, stride=stride)
    return tower
