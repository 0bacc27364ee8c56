"""The daemon's optional multimodal parts: the fusion stage (``[fusion]``) and the embedding memory (``[memory]``).

Both hang on the pipeline's ``on_window`` hook (:mod:`runtime.window_hooks`). Fused events
are handed to the daemon's callback, which commits them to the event log like any event
(``"type": "fused_event"``, ``"modality": "fused"``, so sinks publish them on
``events/fused/<label>``). The memory answers the control op ``memory.search``
(:func:`runtime.search.search_request`): text and text arithmetic from anyone allowed to
send control requests; example queries (``@audio:clip.wav``, files on the robot) only with
the control token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.daemon_sections import DaemonConfig
from runtime.embedder import Embedder
from runtime.errors import InputError
from runtime.fusion_stage import FusedPipelineEvent, FusionStage, check_bank
from runtime.manifest import ModelManifest
from runtime.memory import WindowRecorder
from runtime.prompts import PromptBank
from runtime.search import search_request
from runtime.window_hooks import WindowHook, fan_out, open_memory


class Multimodal:
    """Fusion stage and memory recorder of one daemon run (either may be off).

    Args:
        cfg: the daemon config (``fusion`` and ``memory`` sections).
        manifest: the bundle (the memory records its model id).
        bank: the initial prompt bank.
        on_fused: called from the inference thread with every fused event at its onset.

    Raises:
        EdgebindError: the memory store cannot be opened (corrupt, other settings or model).
    """

    def __init__(self, cfg: DaemonConfig, manifest: ModelManifest, bank: PromptBank,
                 on_fused: Callable[[FusedPipelineEvent], None]) -> None:  # fmt: skip
        fusion, mem = cfg.fusion, cfg.memory
        self.stage = FusionStage(fusion.config, bank, on_fused) if fusion.enabled and fusion.config else None
        self.recorder = None
        if mem.enabled and mem.path is not None:
            memory = open_memory(mem.path, manifest, mem.max_windows, mem.max_age_s, mem.dtype)
            self.recorder = WindowRecorder(memory)
        self.manifest = manifest
        self.publish_single = not fusion.enabled or fusion.publish_single

    def hook(self) -> WindowHook | None:
        """The pipeline's ``on_window`` hook (None when both parts are off)."""
        return fan_out([self.recorder, self.stage])

    def set_streams(self, streams: list[tuple[str, str, Any]]) -> None:
        """Record each stream's source name (``Pipeline.streams``) with its windows."""
        if self.recorder is not None:
            self.recorder.sources = {key: src for key, src, _ in streams}

    def check_bank(self, bank: PromptBank) -> None:
        """Raise PromptError if ``bank`` lacks a fused label (before a prompt swap)."""
        if self.stage is not None:
            check_bank(self.stage.config, bank)

    def swap_bank(self, bank: PromptBank) -> None:
        """Score later windows against ``bank`` (checked by :meth:`check_bank` first)."""
        if self.stage is not None:
            self.stage.swap_bank(bank)

    def search(self, request: Mapping[str, Any], embedder: Embedder, base_dir: Path, examples: bool) -> dict:
        """Answer ``memory.search`` (reply dict, never raises on bad input).

        Args:
            examples: whether example terms (files on the robot) may be read.
        """
        if self.recorder is None:
            return {"ok": False, "error": "no embedding memory; set [memory] enabled = true and a path"}

        def embed_query(expr: str) -> NDArray[np.float32]:
            from runtime.prompt_math import is_expression, parse_expression, query_vector

            if not examples and is_expression(expr) and any(t.example for t in parse_expression(expr)):
                raise InputError("example queries read files on the robot and need the control token; "
                                 "send the token, a text query or the example's vector")  # fmt: skip
            return query_vector(expr, self.manifest, embedder, base_dir)

        return search_request(self.recorder.memory, None, request, embed_query=embed_query)

    def status(self) -> dict[str, Any]:
        """Fusion counters and memory size for the status document ({} when both are off)."""
        out: dict[str, Any] = {}
        if self.stage is not None:
            out["fusion"] = self.stage.counters()
        if self.recorder is not None:
            memory = self.recorder.memory
            out["memory"] = {"path": str(memory.dir), "windows": len(memory), "capacity": memory.capacity,
                             "stored_this_run": self.recorder.stored,
                             "failed_this_run": self.recorder.failed}  # fmt: skip
        return out

    def flush(self) -> None:
        """Close open fused events at the end of the run (the memory commits its tail on :meth:`close`)."""
        if self.stage is not None:
            self.stage.flush()

    def close(self) -> None:
        """Close the memory (idempotent)."""
        if self.recorder is not None:
            self.recorder.memory.close()
