"""The daemon's control target for prompts and memory search (mixed into :class:`runtime.daemon.Daemon`).

Prompt changes (control ``prompts.set`` / ``prompts.reload``, SIGHUP) encode the new prompts
first and swap the bank atomically only when that worked and every fused label still has a
prompt; otherwise the old bank stays and the reason is logged in one line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from runtime.daemon_config import prompts_from_lines, section_prompts
from runtime.errors import EdgebindError
from runtime.prompts import Prompt, PromptBank, load_prompt_file
from runtime.stream import prompt_bank

if TYPE_CHECKING:
    from runtime.daemon_multimodal import Multimodal
    from runtime.daemon_sections import DaemonConfig
    from runtime.embedder import Embedder
    from runtime.pipeline import Pipeline

_LOG = logging.getLogger("edgebind.daemon")


class PromptControl:
    """Prompt bank queries and changes, and memory search, for the control handler."""

    cfg: DaemonConfig
    embedder: Embedder | None
    pipeline: Pipeline | None
    multi: Multimodal | None
    _bank: PromptBank | None
    _prompt_lock: threading.Lock
    _prompt_origin: str
    _count: Callable[..., None]  # the daemon's counter (name, n=1)

    def _config_prompts(self) -> tuple[Prompt, ...]:
        return section_prompts(self.cfg.prompts, self.cfg.path.parent)

    def prompts(self) -> list[dict[str, Any]]:
        bank = self._bank
        return [{"label": p.label, "templates": list(p.templates), "background": p.background,
                 "threshold": p.threshold} for p in (bank.prompts if bank else ())]  # fmt: skip

    def parse_prompts(self, lines: list[str], where: str) -> tuple[Prompt, ...]:
        p = self.cfg.prompts  # examples sent over control resolve next to the prompt file, else the config
        return prompts_from_lines(lines, where, p.file.parent if p.file is not None else self.cfg.path.parent)

    def set_prompts(self, prompts: tuple[Prompt, ...], origin: str) -> dict[str, Any]:
        """Encode ``prompts`` and swap them in atomically; EdgebindError leaves the old bank."""
        assert self.embedder is not None and self.pipeline is not None
        with self._prompt_lock:
            try:
                bank = prompt_bank(self.embedder, prompts, self.cfg.prompts.cache_dir)
                if self.multi is not None:
                    self.multi.check_bank(bank)  # a fused label must keep its prompt
            except Exception as exc:  # bad prompts or a text-encoder failure: keep the old bank
                self._count("prompt_reload_failed")
                _LOG.warning("prompts from %s rejected, old prompts kept: %s", origin, " ".join(str(exc).split()))
                raise
            self.pipeline.swap_bank(bank)
            if self.multi is not None:
                self.multi.swap_bank(bank)
            self._bank, self._prompt_origin = bank, origin
        self._count("prompt_reloads")
        _LOG.info("prompts swapped from %s: %d prompts (%s)", origin, len(prompts),
                  ", ".join(bank.labels)[:200])  # fmt: skip
        return {"prompts": len(prompts), "labels": list(bank.labels)}

    def reload_prompts(self, origin: str) -> dict[str, Any]:
        """Re-read ``[prompts] file``; a bad file is logged (one line) and the old bank kept."""
        file = self.cfg.prompts.file
        try:
            if file is None:
                raise EdgebindError("prompts: no [prompts] file configured to reload (prompts.list is fixed)")
            prompts = load_prompt_file(file)
        except EdgebindError as exc:
            self._count("prompt_reload_failed")
            _LOG.warning("prompt reload (%s) rejected, old prompts kept: %s", origin, " ".join(str(exc).split()))
            raise
        return self.set_prompts(prompts, f"{origin}:{file.name}")

    def search_memory(self, request: Mapping[str, Any], examples: bool) -> dict[str, Any]:
        """Control ``memory.search``: ``examples`` says whether example files may be read (token given)."""
        assert self.embedder is not None and self.multi is not None
        p = self.cfg.prompts
        base = p.file.parent if p.file is not None else self.cfg.path.parent
        return self.multi.search(request, self.embedder, base, examples)
