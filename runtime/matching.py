"""Match window embeddings against a prompt bank: scores, thresholds, hysteresis, events.

Per window the matcher scores every prompt (background prompts included):

- ``cosine``: cosine similarity of the window's unit embedding and each prompt vector;
- ``softmax``: ``softmax(logit_scale * cosine)`` over all prompts, background included.

The margin of a prompt is its score minus the best *competing* score (every other
prompt, background included); with a single prompt it is the score itself.

Events, per ``(stream_id, label)``:

- Opening: only the best-scoring non-background prompt can open on a window, and only
  if it also beats every background prompt, its score is >= its enter threshold
  (``Prompt.threshold`` or ``MatchConfig.enter_threshold``), its margin is >=
  ``margin_min``, and its cooldown is over. A background prompt winning a window thus
  prevents opens but closes nothing by itself.
- Minimum duration: the open conditions must hold on consecutive windows (successive
  ``update`` calls of the stream) for ``min_duration_s``, measured from the first
  window's start to the current window's start: ``0`` opens on one window,
  ``k * hop`` needs ``k + 1`` windows. The event is emitted at that window (onset).
- Hysteresis: an open event stays open while its own score is >= its exit threshold,
  whichever prompt wins; it closes on the first window below. A per-prompt threshold
  shifts that prompt's exit threshold by the same amount (the gap
  ``enter_threshold - exit_threshold`` is kept).
- Cooldown: after an event closes, the label cannot start a new run on that stream
  until a window ends at least ``cooldown_s`` after the closed event's end.

A :class:`~runtime.types.Match` reports the run's peak score and the margin at that
window; ``start_ns`` is the first window's start and ``end_ns`` the end of the last
window at or above the threshold (the current window for onsets).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.config_util import config_from_dict, config_to_dict
from runtime.errors import ConfigError, InputError
from runtime.prompts import PromptBank
from runtime.types import Match, Modality

SCORINGS = ("cosine", "softmax")


@dataclass(frozen=True)
class MatchConfig:
    """How window scores become events (see the module docstring).

    Attributes:
        scoring: ``"cosine"`` or ``"softmax"`` (softmax of ``logit_scale * cosine`` over all prompts).
        logit_scale: softmax temperature inverse (CLIP's learned scale is 100).
        enter_threshold: score to open an event (``Prompt.threshold`` overrides per prompt).
        exit_threshold: score below which an open event closes (<= enter_threshold).
        min_duration_s: seconds the open conditions must hold over consecutive windows.
        cooldown_s: seconds after an event ends before the same label may re-open on the stream.
        margin_min: best-minus-runner-up score margin required to open.
        top_k: entries kept for :meth:`Matcher.top`.
    """

    scoring: str = "cosine"
    logit_scale: float = 100.0
    enter_threshold: float = 0.25
    exit_threshold: float = 0.20
    min_duration_s: float = 0.0
    cooldown_s: float = 2.0
    margin_min: float = 0.0
    top_k: int = 3

    def __post_init__(self) -> None:
        numbers = {k: getattr(self, k) for k in ("logit_scale", "enter_threshold", "exit_threshold",
                                                 "min_duration_s", "cooldown_s", "margin_min")}  # fmt: skip
        for name, value in numbers.items():
            if not math.isfinite(value):
                raise ConfigError(f"match config: {name} = {value} must be a finite number")
        if self.scoring not in SCORINGS:
            raise ConfigError(f"match config: scoring {self.scoring!r} must be one of {', '.join(SCORINGS)}")
        if self.logit_scale <= 0:
            raise ConfigError(f"match config: logit_scale {self.logit_scale} must be > 0")
        if self.exit_threshold > self.enter_threshold:
            raise ConfigError(f"match config: exit_threshold {self.exit_threshold} must be <= "
                              f"enter_threshold {self.enter_threshold}")  # fmt: skip
        for name in ("min_duration_s", "cooldown_s", "margin_min"):
            if numbers[name] < 0:
                raise ConfigError(f"match config: {name} {numbers[name]} must be >= 0")
        if self.top_k < 1:
            raise ConfigError(f"match config: top_k {self.top_k} must be >= 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "match config") -> MatchConfig:
        """Build from a JSON object: unknown keys and invalid values raise a one-line ConfigError."""
        return config_from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return config_to_dict(self)


@dataclass
class _Run:
    """A candidate or open event of one (stream, label) (mutable, private to the matcher)."""

    modality: Modality
    start_ns: int
    end_ns: int
    peak_score: float
    peak_margin: float
    emitted: bool = False

    def extend(self, end_ns: int, score: float, margin: float) -> None:
        self.end_ns = end_ns
        if score > self.peak_score:
            self.peak_score, self.peak_margin = score, margin

    def to_match(self, label: str, stream_id: str) -> Match:
        return Match(label, self.peak_score, self.peak_margin, self.modality, stream_id, self.start_ns, self.end_ns)


@dataclass(frozen=True)
class _Scored:
    """One window's scores: (P,) float64 scores and margins, bank order."""

    scores: NDArray[np.float64]
    margins: NDArray[np.float64]


class Matcher:
    """Turns per-window embeddings into :class:`~runtime.types.Match` events.

    Thread-safe: ``update``, ``top``, ``closed``, ``flush`` and ``swap_bank`` may be
    called from different threads.

    Args:
        bank: the prompts and their unit vectors.
        config: scoring, thresholds, hysteresis, duration, cooldown, top-k.
    """

    def __init__(self, bank: PromptBank, config: MatchConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._bank = bank
        self._thresholds = _thresholds(bank, config)
        self._runs: dict[tuple[str, str], _Run] = {}
        self._cooldown_until_ns: dict[tuple[str, str], int] = {}
        self._top: dict[str, list[tuple[str, float]]] = {}
        self._closed: list[Match] = []

    @property
    def bank(self) -> PromptBank:
        """The bank in use."""
        return self._bank

    def update(
        self, stream_id: str, modality: Modality, start_ns: int, end_ns: int, unit: NDArray[np.float32]
    ) -> list[Match]:
        """Score one window and advance the stream's event state.

        Args:
            stream_id: the window's stream (state is kept per stream and label).
            modality: the window's modality (reported in matches).
            start_ns: window start, monotonic ns.
            end_ns: window end, monotonic ns.
            unit: (D,) float32 L2-normalised embedding of the window.

        Returns:
            The events that open on this window (at most one).
        """
        vec = np.asarray(unit, dtype=np.float32)
        if vec.ndim != 1:
            raise InputError(f"matcher: {stream_id} embedding has shape {vec.shape}; expected (D,)")
        with self._lock:
            scored = self._score(vec)
            self._top[stream_id] = self._top_k(scored.scores)
            self._continue_open(stream_id, end_ns, scored)
            opened = self._advance_candidate(stream_id, modality, start_ns, end_ns, scored)
        return [opened] if opened is not None else []

    def top(self, stream_id: str) -> list[tuple[str, float]]:
        """The stream's latest top-k ``(label, score)``, best first (background included); [] if unseen."""
        with self._lock:
            return list(self._top.get(stream_id, []))

    def closed(self) -> list[Match]:
        """Events that closed since the last call, with their final ``end_ns`` and peak score."""
        with self._lock:
            out, self._closed = self._closed, []
        return out

    def flush(self, stream_id: str | None = None) -> None:
        """Close the open events of ``stream_id`` (every stream if None), e.g. at end of input.

        They appear in the next :meth:`closed`; pending (not yet emitted) runs are dropped.
        """
        with self._lock:
            for key in [k for k in self._runs if stream_id is None or k[0] == stream_id]:
                self._end_run(key)

    def swap_bank(self, bank: PromptBank) -> None:
        """Replace the bank atomically.

        State of labels that disappear (or switch between event and background) is reset:
        their open events close into :meth:`closed`, pending runs and cooldowns are dropped.
        """
        thresholds = _thresholds(bank, self.config)
        kept = {p.label for p in bank.prompts if not p.background}
        with self._lock:
            for key in [k for k in self._runs if k[1] not in kept]:
                self._end_run(key)
            self._cooldown_until_ns = {k: v for k, v in self._cooldown_until_ns.items() if k[1] in kept}
            labels = set(bank.labels)
            self._top = {s: [e for e in top if e[0] in labels] for s, top in self._top.items()}
            self._bank, self._thresholds = bank, thresholds

    def _score(self, vec: NDArray[np.float32]) -> _Scored:
        """Scores and margins of one window against every prompt."""
        cos = self._bank.cosine(vec[None])[0].astype(np.float64)
        if self.config.scoring == "softmax":
            logits = self.config.logit_scale * cos
            exp = np.exp(logits - logits.max())
            scores = exp / exp.sum()
        else:
            scores = cos
        if scores.size == 1:
            return _Scored(scores, scores.copy())
        order = np.argsort(-scores, kind="stable")
        best, second = scores[order[0]], scores[order[1]]
        competitor = np.where(np.arange(scores.size) == order[0], second, best)
        return _Scored(scores, scores - competitor)

    def _top_k(self, scores: NDArray[np.float64]) -> list[tuple[str, float]]:
        order = np.argsort(-scores, kind="stable")[: self.config.top_k]
        labels = self._bank.labels
        return [(labels[i], float(scores[i])) for i in order]

    def _continue_open(self, stream_id: str, end_ns: int, scored: _Scored) -> None:
        """Extend emitted events still >= their exit threshold; close the others."""
        for i, prompt in enumerate(self._bank.prompts):
            key = (stream_id, prompt.label)
            run = self._runs.get(key)
            if run is None or not run.emitted:
                continue
            if scored.scores[i] >= self._thresholds[i][1]:
                run.extend(end_ns, float(scored.scores[i]), float(scored.margins[i]))
            else:
                self._end_run(key)

    def _advance_candidate(
        self, stream_id: str, modality: Modality, start_ns: int, end_ns: int, scored: _Scored
    ) -> Match | None:
        """Grow the best prompt's pending run (dropping other pending runs); emit it once long enough."""
        best = self._opening_candidate(stream_id, end_ns, scored)
        for key in [k for k, r in self._runs.items() if k[0] == stream_id and not r.emitted]:
            if best is None or key[1] != self._bank.labels[best]:
                del self._runs[key]
        if best is None:
            return None
        key = (stream_id, self._bank.labels[best])
        score, margin = float(scored.scores[best]), float(scored.margins[best])
        run = self._runs.get(key)
        if run is not None and run.emitted:
            return None
        if run is None:
            run = self._runs[key] = _Run(modality, start_ns, end_ns, score, margin)
        else:
            run.extend(end_ns, score, margin)
        if (start_ns - run.start_ns) < round(self.config.min_duration_s * 1e9):
            return None
        run.emitted = True
        return run.to_match(key[1], stream_id)

    def _opening_candidate(self, stream_id: str, end_ns: int, scored: _Scored) -> int | None:
        """Index of the prompt that may open on this window, or None."""
        order = np.argsort(-scored.scores, kind="stable")
        best = int(order[0])
        prompt = self._bank.prompts[best]
        if prompt.background:
            return None
        if scored.scores[best] < self._thresholds[best][0] or scored.margins[best] < self.config.margin_min:
            return None
        if end_ns < self._cooldown_until_ns.get((stream_id, prompt.label), end_ns):
            return None
        return best

    def _end_run(self, key: tuple[str, str]) -> None:
        """Drop a run; an emitted one closes into the closed list and starts the cooldown."""
        run = self._runs.pop(key)
        if run.emitted:
            self._closed.append(run.to_match(key[1], key[0]))
            self._cooldown_until_ns[key] = run.end_ns + round(self.config.cooldown_s * 1e9)


def _thresholds(bank: PromptBank, config: MatchConfig) -> list[tuple[float, float]]:
    """(enter, exit) per prompt: the per-prompt threshold shifts both, keeping the hysteresis gap."""
    gap = config.enter_threshold - config.exit_threshold
    out = []
    for p in bank.prompts:
        enter = config.enter_threshold if p.threshold is None else p.threshold
        out.append((enter, enter - gap))
    return out
