"""Training checkpoints: atomic writes, RNG capture as plain tensors, newest-first discovery.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.checkpoint import CheckpointError

CHECKPOINT_FORMAT = "edgebind-train-1"
_NAME = re.compile(r"^step_(\d{8})\.pt$")


def capture_rng() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and Python RNG states as tensors and plain values."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng` returned."""
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same directory, fsync, then ``os.replace``.

    A crash or an exception leaves either the old file or the new one, never a partial
    file; the temporary file is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def checkpoint_path(directory: str | Path, step: int) -> Path:
    """``<directory>/step_00000123.pt``."""
    return Path(directory) / f"step_{step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest step first (temporary files ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest checkpoint in ``directory`` or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints."""
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)


def load_training_checkpoint(path: str | Path, config_hash: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by the trainer (``weights_only=True``).

    Args:
        path: the checkpoint file.
        config_hash: when given, refuse a checkpoint written by another configuration.

    Raises:
        CheckpointError: unreadable, not a training checkpoint, or another configuration.
    """
    path = Path(path)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except Exception as exc:  # torch raises several types for truncated/unsafe files
        raise CheckpointError(f"{path}: not a readable training checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an edgebind training checkpoint (format {CHECKPOINT_FORMAT})")
    if config_hash is not None and state.get("config_hash") != config_hash:
        raise CheckpointError(
            f"{path}: written by another training config (hash {str(state.get('config_hash'))[:12]}, "
            f"this config {config_hash[:12]}); resume with the same config or start a new out_dir"
        )
    return state
