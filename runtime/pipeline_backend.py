"""Encoder-failure bookkeeping of :class:`runtime.pipeline.Pipeline`: counts and restart backoff.

A failing encoder call fails that batch's windows (the pipeline counts them) and is
reported here: the failure is counted per modality and that modality's backend is closed
so the next batch reopens it, at most once per backoff interval (starting at
``BACKEND_BACKOFF_START_S``, doubling up to ``BACKEND_BACKOFF_MAX_S``; reset by a success).
An :class:`~runtime.errors.InputError` is the windows' fault, not the backend's: it is
reported, not counted, and nothing is restarted.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from runtime.errors import InputError
from runtime.types import Modality

if TYPE_CHECKING:
    from runtime.embedder import Embedder

BACKEND_BACKOFF_START_S = 0.5
BACKEND_BACKOFF_MAX_S = 30.0


class BackendHealth:
    """Failures and restarts per modality and when each backend may restart next.

    :meth:`failed` and :meth:`succeeded` are called by the inference thread only;
    :meth:`counters` from any thread.

    Args:
        errors: the pipeline's bounded error lines; one line is appended per failure.
    """

    def __init__(self, errors: deque[str]) -> None:
        self._errors = errors
        self._lock = threading.Lock()  # the counters, read by counters()
        self._failures: dict[Modality, int] = {}
        self._restarts: dict[Modality, int] = {}
        self._retry: dict[Modality, tuple[float, float]] = {}  # modality -> (next restart s, backoff s)

    def succeeded(self, mod: Modality) -> None:
        """A successful encoder call: the modality's backoff starts over."""
        self._retry.pop(mod, None)

    def failed(self, mod: Modality, exc: Exception, embedder: Embedder) -> None:
        """Report and count the failure; close the modality's backend (reopened by the next batch)
        unless it is backing off."""
        self._errors.append(f"{mod.value} encoder: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        if isinstance(exc, InputError):
            return
        now = time.monotonic()
        next_s, backoff_s = self._retry.get(mod, (0.0, BACKEND_BACKOFF_START_S))
        with self._lock:
            self._failures[mod] = self._failures.get(mod, 0) + 1
        if now < next_s:
            return
        self._retry[mod] = (now + backoff_s, min(2 * backoff_s, BACKEND_BACKOFF_MAX_S))
        try:
            embedder.reset(mod)
        except Exception as close_exc:  # a backend that cannot even close is dropped anyway
            self._errors.append(f"{mod.value} encoder: close failed: {close_exc}")
        with self._lock:
            self._restarts[mod] = self._restarts.get(mod, 0) + 1

    def counters(self) -> dict[str, dict[str, int]]:
        """``{"backend_failures": {modality: n}, "backend_restarts": {modality: n}}``."""
        with self._lock:
            return {
                "backend_failures": {m.value: n for m, n in self._failures.items()},
                "backend_restarts": {m.value: n for m, n in self._restarts.items()},
            }
