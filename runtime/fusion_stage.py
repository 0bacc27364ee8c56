"""Cross-sensor fusion inside a running pipeline: window vectors -> label cosines -> :class:`Fuser` -> events.

A :class:`FusionStage` is a :class:`runtime.pipeline.Pipeline` ``on_window`` hook. For each
embedded window it scores the unit vector against the current prompt bank (the same bank
the per-stream matcher uses, background prompts included: they take part in the fuser's
softmax), and feeds the scores to a :class:`runtime.fusion.Fuser` at the window's evidence
time: the frame time for frame modalities (depth, thermal, vision), the window centre for
sampled ones (audio, IMU), as :mod:`runtime.fusion_eval` does when the rules are tuned.
Each window triggers an evaluation at its own evidence time over the evidence up to that
time, so a window whose evidence is older than another modality's newest (a 5 s IMU window's
centre lies 2.5 s back, a depth frame's 0.1 s) is combined with it at that modality's next
window: a fused onset can lag the last supporting window by one hop.

Fused events go to ``on_fused`` at their onset as :class:`FusedPipelineEvent` (with the
stream whose window completed the evidence and its capture time, for latency);
:meth:`FusionStage.closed` returns them again once closed, with their final extent and
peak. All times are host monotonic ns, like :class:`runtime.types.Window`.

Config files (``--fusion FILE`` of ``runtime.stream``, ``[fusion] file`` of the daemon) are
a :class:`~runtime.fusion.FusionConfig` as JSON (``benchmarks/fusion.py --write-config``
writes the tuned one, e.g. ``bundles/demo/fusion.json``) or TOML; :func:`load_fusion_config`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.config_util import toml_module
from runtime.errors import ConfigError
from runtime.fusion import FusedEvent, Fuser, FusionConfig
from runtime.prompts import PromptBank, PromptError
from runtime.types import Modality

FRAME_MODALITIES = frozenset({Modality.DEPTH, Modality.THERMAL, Modality.VISION})
MAX_CONFIG_BYTES = 1 << 20
CLOSED_KEPT = 1000  # closed fused events kept for flush() (a daemon runs for months: bounded)


@dataclass(frozen=True)
class FusedPipelineEvent:
    """A fused event as the pipeline raised it.

    Attributes:
        event: the fused event (label, peak score so far, extent, supporting modalities).
        stream: key of the stream whose window raised it.
        capture_ns: capture time of that window's last sample (host monotonic ns).
        emitted_ns: when the fuser raised it (host monotonic ns).
    """

    event: FusedEvent
    stream: str
    capture_ns: int
    emitted_ns: int

    @property
    def latency_ms(self) -> float:
        """Capture of the deciding window -> fused event, milliseconds."""
        return (self.emitted_ns - self.capture_ns) / 1e6


def load_fusion_config(path: str | Path) -> FusionConfig:
    """Read a fusion config file: JSON (``.json``) or TOML (any other suffix).

    Raises:
        ConfigError: missing, unreadable or malformed file, or an invalid config (one line with the file).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"fusion config {path}: cannot read ({exc.strerror or exc}); check the path") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"fusion config {path}: {len(raw)} bytes is too large for a config file")
    try:
        text = raw.decode("utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = toml_module().loads(text)
    except (UnicodeDecodeError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise ConfigError(f"fusion config {path}: not valid {kind} ({' '.join(str(exc).split())})") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"fusion config {path}: expected an object of fusion settings with rules")
    return FusionConfig.from_dict(data, where=str(path))


def check_bank(config: FusionConfig, bank: PromptBank) -> None:
    """Every fused label needs a (non-background) prompt of the same label.

    Raises:
        PromptError: one line naming the first missing label.
    """
    have = {p.label for p in bank.prompts if not p.background}
    missing = [label for label in config.labels if label not in have]
    if missing:
        raise PromptError(f"fusion rule {missing[0]!r} has no prompt with that label "
                          f"({len(missing)} missing); add the prompt or remove the rule")  # fmt: skip


class FusionStage:
    """Feeds every embedded window of a pipeline to a :class:`Fuser` (module docstring).

    Args:
        config: fusion rules and settings.
        bank: the prompt bank to score against (swap it with :meth:`swap_bank` on reload).
        on_fused: called from the inference thread with every fused event at its onset (keep it quick).
        clock_ns: monotonic clock (tests pass a fake one).

    Raises:
        PromptError: a fused label has no prompt in ``bank``.
    """

    def __init__(
        self,
        config: FusionConfig,
        bank: PromptBank,
        on_fused: Callable[[FusedPipelineEvent], None] | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        check_bank(config, bank)
        self.config = config
        self._bank = bank
        self._fuser = Fuser(config)
        self._on_fused = on_fused
        self._clock = clock_ns
        self._lock = threading.Lock()
        self._closed: deque[FusedEvent] = deque(maxlen=CLOSED_KEPT)
        self.windows = 0
        self.by_label: dict[str, int] = {}

    def swap_bank(self, bank: PromptBank) -> None:
        """Score later windows against ``bank``; raises PromptError (and keeps the old bank) if a label is missing."""
        check_bank(self.config, bank)
        with self._lock:
            self._bank = bank

    def __call__(self, key: str, modality: Modality, start_ns: int, end_ns: int, vector: np.ndarray) -> None:
        """The ``on_window`` hook: score one unit vector (D,) float32 and update the fuser."""
        with self._lock:
            bank = self._bank
        cosine = bank.cosine(np.asarray(vector, np.float32).reshape(1, -1))[0]
        scores = dict(zip(bank.labels, cosine.tolist(), strict=True))
        mod = Modality(modality)
        frame = mod in FRAME_MODALITIES
        time_ns = int(start_ns) if frame else (int(start_ns) + int(end_ns)) // 2
        last_ns = int(start_ns) if frame else int(end_ns)  # the evidence's newest sample
        opened = self._fuser.update(time_ns, mod.value, scores)
        now_ns = self._clock()
        with self._lock:
            self.windows += 1
            for event in opened:
                self.by_label[event.label] = self.by_label.get(event.label, 0) + 1
            self._closed.extend(self._fuser.closed())
        for event in opened:
            if self._on_fused is not None:
                self._on_fused(FusedPipelineEvent(event, key, min(last_ns, now_ns), now_ns))

    def flush(self) -> list[FusedEvent]:
        """Close every open fused event (end of the run); the closed events, oldest first (the last
        :data:`CLOSED_KEPT`), with their final extent and peak score."""
        self._fuser.flush()
        with self._lock:
            self._closed.extend(self._fuser.closed())
            return list(self._closed)

    def counters(self) -> dict[str, Any]:
        """Windows fused, fused events raised, and events per label."""
        with self._lock:
            return {"windows": self.windows, "events": sum(self.by_label.values()), "by_label": dict(self.by_label)}


def fused_event_to_dict(fe: FusedPipelineEvent, t0_ns: int) -> dict[str, Any]:
    """The JSON-lines form of a fused event (schema in :mod:`runtime.stream`)."""
    e = fe.event
    return {
        "type": "fused_event",
        "label": e.label,
        "score": round(float(e.score), 5),
        "modality": "fused",
        "modalities": list(e.modalities),
        "per_modality": {k: round(float(v), 4) for k, v in e.per_modality.items()},
        "stream": fe.stream,
        "start_ns": int(e.start_ns),
        "end_ns": int(e.end_ns),
        "start_s": round((e.start_ns - t0_ns) / 1e9, 4),
        "end_s": round((e.end_ns - t0_ns) / 1e9, 4),
        "latency_ms": round(fe.latency_ms, 3),
    }
