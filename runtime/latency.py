"""Per-stage latency accounting for the streaming pipeline, in bounded memory.

Each stage keeps a fixed-size reservoir (Vitter's algorithm R) of its latencies, so
p50/p99 describe the whole run whatever its length, plus exact count, mean and max.
Stage names used by :mod:`runtime.pipeline` (all milliseconds, ``time.monotonic_ns``):

- ``window``: capture (the window's last sample) -> window ready (cut by the windower);
- ``queue``: window ready -> taken by the inference thread;
- ``preprocess``: taken -> model input ready;
- ``embed``: model input ready -> embeddings out of the backend;
- ``match``: embeddings -> matcher updated;
- ``total``: capture -> matched (the sensor-to-decision latency of every window).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

STAGES: tuple[str, ...] = ("window", "queue", "preprocess", "embed", "match", "total")


@dataclass(frozen=True)
class StageLatency:
    """Summary of one stage.

    Attributes:
        count: latencies recorded.
        p50_ms: median, milliseconds (nan when count is 0).
        p99_ms: 99th percentile, milliseconds (nan when count is 0).
        mean_ms: mean over every recorded value, milliseconds.
        max_ms: largest recorded value, milliseconds.
    """

    count: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready dict; nan becomes None."""
        return {
            "count": self.count,
            "p50_ms": _finite(self.p50_ms),
            "p99_ms": _finite(self.p99_ms),
            "mean_ms": _finite(self.mean_ms),
            "max_ms": _finite(self.max_ms),
        }


class Reservoir:
    """A uniform sample of at most ``capacity`` values from a stream of any length (not thread-safe).

    Args:
        capacity: values kept (memory is O(capacity) whatever the number of adds).
        seed: seeds the replacement choice (deterministic for tests).
    """

    def __init__(self, capacity: int = 2048, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"reservoir capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._values: list[float] = []
        self._rng = random.Random(seed)
        self.count = 0
        self.total = 0.0
        self.max = float("-inf")

    def add(self, value: float) -> None:
        """Record one value."""
        self.count += 1
        self.total += value
        self.max = max(self.max, value)
        if len(self._values) < self.capacity:
            self._values.append(value)
            return
        j = self._rng.randrange(self.count)
        if j < self.capacity:
            self._values[j] = value

    def summary(self) -> StageLatency:
        """p50/p99 of the kept sample, exact count/mean/max."""
        if not self.count:
            nan = float("nan")
            return StageLatency(0, nan, nan, nan, nan)
        p50, p99 = np.percentile(np.asarray(self._values, dtype=np.float64), [50.0, 99.0])
        return StageLatency(self.count, float(p50), float(p99), self.total / self.count, self.max)


class LatencyRecorder:
    """Thread-safe per-stage reservoirs (one lock; adds are O(1)).

    Args:
        stages: stage names accepted by :meth:`add`.
        capacity: reservoir size per stage.
    """

    def __init__(self, stages: Iterable[str] = STAGES, capacity: int = 2048) -> None:
        self._lock = threading.Lock()
        self._stages = {name: Reservoir(capacity, seed=i) for i, name in enumerate(stages)}

    def add(self, stage: str, ms: float) -> None:
        """Record ``ms`` milliseconds for ``stage`` (KeyError for an unknown stage)."""
        with self._lock:
            self._stages[stage].add(ms)

    def add_ns(self, stage: str, start_ns: int, end_ns: int) -> None:
        """Record ``end_ns - start_ns`` (monotonic ns) as milliseconds."""
        self.add(stage, (end_ns - start_ns) / 1e6)

    def summary(self) -> dict[str, StageLatency]:
        """Stage name -> its summary, in stage order."""
        with self._lock:
            return {name: r.summary() for name, r in self._stages.items()}


def summary_to_dict(summary: dict[str, StageLatency]) -> dict[str, dict[str, float | int | None]]:
    """JSON-ready form of :meth:`LatencyRecorder.summary`."""
    return {name: s.to_dict() for name, s in summary.items()}


def _finite(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 3)
