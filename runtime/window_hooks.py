"""Consumers of a pipeline's embedded windows: fan-out to several hooks, and the recording memory.

A window hook is the :class:`runtime.pipeline.Pipeline` ``on_window`` callable,
``hook(stream_key, modality, start_ns, end_ns, unit_vector)`` with host monotonic ns and a
(D,) float32 unit vector, called from the inference thread once per embedded window.
``runtime.stream`` and the daemon attach up to two: a
:class:`runtime.memory.WindowRecorder` (``--memory DIR`` / ``[memory]``) and a
:class:`runtime.fusion_stage.FusionStage` (``--fusion FILE`` / ``[fusion]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from runtime.manifest import ModelManifest
from runtime.memory import EmbeddingMemory, MemoryStoreError
from runtime.types import Modality

WindowHook = Callable[[str, Modality, int, int, np.ndarray], None]


def fan_out(hooks: Sequence[WindowHook | None]) -> WindowHook | None:
    """One hook calling every given hook in order (None entries skipped; None when none is left).

    Every hook runs even when an earlier one raises; the first exception is then re-raised
    (the pipeline reports it in its status and goes on).
    """
    live = [h for h in hooks if h is not None]
    if not live:
        return None
    if len(live) == 1:
        return live[0]

    def call_all(key: str, modality: Modality, start_ns: int, end_ns: int, vector: np.ndarray) -> None:
        first: Exception | None = None
        for hook in live:
            try:
                hook(key, modality, start_ns, end_ns, vector)
            except Exception as exc:  # the next hook still gets the window
                first = first or exc
        if first is not None:
            raise first

    return call_all


def open_memory(
    directory: str | Path,
    manifest: ModelManifest,
    max_windows: int | None = None,
    max_age_s: float | None = None,
    dtype: str | None = None,
) -> EmbeddingMemory:
    """Open (or create) the embedding memory a run records into, tied to ``manifest``'s model.

    A new store records the bundle's model id and path (``python -m runtime.search`` finds the
    bundle there). An existing store filled by another model is refused: its vectors live in
    another embedding space.

    Raises:
        MemoryStoreError: corrupt store, other settings, another model, or a path that cannot be
            created or written (one line with the fix).
    """
    try:
        memory = EmbeddingMemory(directory, manifest.embed_dim, max_windows, max_age_s, dtype=dtype)
    except OSError as exc:  # not a directory, no permission, disk full
        raise MemoryStoreError(f"memory {directory}: cannot create or open it ({exc.strerror or exc}); "
                               "name a writable directory") from None
    stored = memory.meta().get("model_id")
    if stored and stored != manifest.model_id:
        memory.close()
        raise MemoryStoreError(f"memory {directory} was recorded with model {stored[:12]}, this bundle is "
                               f"{manifest.model_id[:12]}; record into another directory")  # fmt: skip
    memory.set_meta({"model_id": manifest.model_id, "bundle": str(Path(manifest.root).resolve())})
    return memory
