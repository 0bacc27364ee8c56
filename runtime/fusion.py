"""Cross-sensor fusion: an event needs evidence from several modalities within a time window.

Every modality's windows are scored against the same prompt bank (text or example
prompts); a :class:`Fuser` turns those per-modality score streams into fused events.

The combination rule, per label ``L`` with a :class:`FusionRule` (``requires``,
``weights``, ``min_modalities``):

1. **Calibrate** each window's raw cosine scores per modality so that modalities are
   comparable (``FusionConfig.calibration``):

   - ``"softmax"`` (default): ``softmax(logit_scale * cosine)`` over every label the
     window was scored against (background labels included), i.e. the probability
     the modality gives ``L`` (0..1). Audio and IMU cosines live on different scales;
     the per-window softmax removes that.
   - ``"zscore"``: ``(cosine - mean) / std`` against the running statistics of that
     (modality, label) pair (exponential moving average with ``zscore_halflife_s``;
     scores before ``zscore_warmup`` windows are 0), i.e. how unusual the score is for
     that sensor. Thresholds are then in standard deviations.
   - ``"cosine"``: raw cosine (only sensible when every tower is calibrated alike).

2. **Pool over time**: for each required modality ``m``, ``s_m`` is the ``max`` (or
   ``mean``, ``FusionConfig.pool``) of its calibrated scores for ``L`` with times in
   ``(t - window_s, t]``; a modality with no window there scores 0 (missing
   evidence counts against the event). Modalities never seen by the fuser are left
   out of the rule (a robot without a thermal camera still detects falls from the rest).

3. **Combine**: ``fused = sum(w_m * s_m) / sum(w_m)`` over the required modalities
   seen, and ``support`` = how many of them have ``s_m >= support_threshold``.

4. **Decide** like :class:`runtime.matching.Matcher`: a run starts when
   ``fused >= enter`` and ``support >= min_modalities`` (capped at the number of
   modalities seen); the event is emitted (onset) once those conditions held on every
   evaluation for ``min_duration_s``; an emitted event stays open while ``fused >= exit``
   and closes on the first evaluation below it; after it closes, the label cannot start
   a new run until ``cooldown_s`` after its end. ``enter``/``exit`` are the rule's
   ``enter_threshold``/``exit_threshold`` where it sets them, else the config's (an
   exit left out is capped at the enter, :meth:`FusionConfig.thresholds`). With
   ``exclusive`` (default) a run can only start for the label whose fused score is the
   highest of all competing rules at that time (as the Matcher lets only the best prompt
   open); open events are not closed by a competitor. A rule with ``exclusive = false``
   (:attr:`FusionRule.exclusive`) stays out of the competition: it may start whatever the
   others score, and its own score blocks none of them (the config's ``exclusive`` decides
   for rules that leave it out; a rule may also opt in under a non-exclusive config).

A rule may require a single modality (``min_modalities`` 1): for a class that only one
sensor shows reliably, averaging in sensors that cannot tell it apart dilutes the
evidence, and :func:`runtime.fusion_tuning.choose_rules` picks such rules per class on
tuning data, as it picks rules that leave the exclusive competition.

The fuser evaluates a label each time one of its required modalities reports, at that
report's time. Times are whatever the caller passes (monotonic ns); pass the time the
window's evidence refers to (its centre is a good choice: a 5 s IMU window reported at
its end would lag the event by 2.5 s). Reports may arrive slightly out of order across
modalities; pooling is by time, not by arrival.

Configuration: :class:`FusionRule` / :class:`FusionConfig` (``from_dict`` / ``to_dict``, JSON
or a TOML table ``[fusion]``) and :func:`default_rules` live in :mod:`runtime.fusion_config`
and are re-exported here. ``benchmarks/fusion.py --write-config`` writes a tuned config
(``bundles/demo/fusion.json``); :func:`runtime.fusion_tuning.tune_fusion` documents how it is tuned.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.fusion_config import CALIBRATIONS, POOLS, SENSOR_MODALITIES, FusionConfig, FusionRule, default_rules

__all__ = ["CALIBRATIONS", "POOLS", "SENSOR_MODALITIES", "FusedEvent", "Fuser", "FusionConfig", "FusionRule",
           "default_rules"]  # fmt: skip


REORDER_NS = 10_000_000_000  # reports of one (modality, label) may arrive this much out of time order


@dataclass(frozen=True)
class FusedEvent:
    """A fused detection.

    Attributes:
        label: the rule's label.
        score: peak fused score over the event.
        start_ns: time of the first evaluation of the run.
        end_ns: time of the last evaluation at or above the exit threshold (> start_ns).
        modalities: required modalities that reached ``support_threshold`` at the peak.
        per_modality: pooled calibrated score of each required modality seen, at the peak.
    """

    label: str
    score: float
    start_ns: int
    end_ns: int
    modalities: tuple[str, ...]
    per_modality: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the style of runtime/stream.py's events."""
        return {"type": "fused_event", "label": self.label, "score": round(self.score, 4),
                "start_ns": self.start_ns, "end_ns": self.end_ns, "modalities": list(self.modalities),
                "per_modality": {k: round(v, 4) for k, v in self.per_modality.items()}}  # fmt: skip


@dataclass
class _Run:
    start_ns: int
    end_ns: int
    peak: float
    support: tuple[str, ...]
    per_modality: dict[str, float]
    emitted: bool = False

    def to_event(self, label: str) -> FusedEvent:
        return FusedEvent(label, self.peak, self.start_ns, max(self.end_ns, self.start_ns + 1), self.support,
                          dict(self.per_modality))  # fmt: skip


@dataclass
class _Stats:
    """Running (EMA) mean / variance of one (modality, label) raw score."""

    n: int = 0
    mean: float = 0.0
    var: float = 0.0
    last_ns: int | None = None


class Fuser:
    """Turns per-modality label scores into :class:`FusedEvent` objects (module docstring).

    Thread-safe: ``update``, ``closed`` and ``flush`` may be called from different threads.

    Args:
        config: rules, calibration, window and thresholds.
    """

    def __init__(self, config: FusionConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._tracks: dict[tuple[str, str], deque[tuple[int, float]]] = {}
        self._seen: set[str] = set()
        self._stats: dict[tuple[str, str], _Stats] = {}
        self._runs: dict[str, _Run] = {}
        self._cooldown_until_ns: dict[str, int] = {}
        self._closed: list[FusedEvent] = []
        self._by_modality: dict[str, list[FusionRule]] = {}
        for rule in config.rules:
            for mod in rule.requires:
                self._by_modality.setdefault(mod, []).append(rule)
        self._window_ns = round(config.window_s * 1e9)
        self._competing = tuple(r for r in config.rules if config.is_exclusive(r))
        self._pool_cache: dict[tuple[str, str, int], float] = {}  # one evaluation's pooled scores

    def update(self, time_ns: int, modality: str, label_scores: Mapping[str, float]) -> list[FusedEvent]:
        """Add one window's raw scores (cosine per label) from ``modality`` and evaluate its labels at ``time_ns``.

        Args:
            time_ns: the time the window's evidence refers to, ns.
            modality: modality name (``"audio"``, ``"imu"``, ...; a :class:`runtime.types.Modality` works too).
            label_scores: raw cosine of the window with every prompt label (background labels
                included: they take part in the softmax).

        Returns:
            The fused events emitted (onset) at this evaluation.
        """
        mod = str(getattr(modality, "value", modality))
        calibrated = self._calibrate(int(time_ns), mod, label_scores)
        with self._lock:
            self._pool_cache.clear()
            self._seen.add(mod)
            for label, value in calibrated.items():
                track = self._tracks.setdefault((mod, label), deque())
                track.append((int(time_ns), value))
                while track and track[0][0] <= time_ns - self._window_ns - REORDER_NS:
                    track.popleft()
            opened = []
            rules = self._by_modality.get(mod, ())
            best = None
            if any(self.config.is_exclusive(r) for r in rules):
                best = max(self._competing, key=lambda r: self._combine(r, int(time_ns))[0]).label
            for rule in rules:
                event = self._evaluate(rule, int(time_ns), best)
                if event is not None:
                    opened.append(event)
        return opened

    def fused_score(self, label: str, time_ns: int) -> tuple[float, int]:
        """(fused score, support) of ``label`` at ``time_ns`` from the evidence so far (0, 0 if no rule)."""
        rule = next((r for r in self.config.rules if r.label == label), None)
        if rule is None:
            return 0.0, 0
        with self._lock:
            self._pool_cache.clear()
            fused, support, _ = self._combine(rule, int(time_ns))
        return fused, len(support)

    def closed(self) -> list[FusedEvent]:
        """Fused events that closed since the last call, with their final ``end_ns`` and peak score."""
        with self._lock:
            out, self._closed = self._closed, []
        return out

    def flush(self) -> None:
        """Close every open event (end of input); pending runs are dropped. They appear in :meth:`closed`."""
        with self._lock:
            for label in list(self._runs):
                self._end_run(label)

    def _calibrate(self, time_ns: int, mod: str, label_scores: Mapping[str, float]) -> dict[str, float]:
        labels = list(label_scores)
        raw = np.array([float(label_scores[k]) for k in labels], dtype=np.float64)
        cfg = self.config
        if cfg.calibration == "softmax":
            logits = cfg.logit_scale * raw
            exp = np.exp(logits - logits.max()) if raw.size else raw
            values = exp / exp.sum() if raw.size else raw
            return dict(zip(labels, values.tolist(), strict=True))
        if cfg.calibration == "cosine":
            return dict(zip(labels, raw.tolist(), strict=True))
        out = {}
        with self._lock:
            for label, x in zip(labels, raw.tolist(), strict=True):
                st = self._stats.setdefault((mod, label), _Stats())
                z = (x - st.mean) / math.sqrt(st.var + 1e-8) if st.n >= max(cfg.zscore_warmup, 2) else 0.0
                out[label] = z
                if st.n == 0:
                    st.mean, st.var = x, 0.0
                else:
                    dt = max(0.0, (time_ns - (st.last_ns or time_ns)) / 1e9)
                    alpha = max(1.0 / (st.n + 1), 1.0 - 0.5 ** (dt / cfg.zscore_halflife_s))
                    d = x - st.mean
                    st.mean += alpha * d
                    st.var = (1.0 - alpha) * (st.var + alpha * d * d)
                st.n += 1
                st.last_ns = time_ns
        return out

    def _pooled(self, mod: str, label: str, time_ns: int) -> float:
        """Pooled calibrated score of (mod, label) over (time_ns - window, time_ns]; cached per evaluation."""
        key = (mod, label, time_ns)
        cached = self._pool_cache.get(key)
        if cached is not None:
            return cached
        track = self._tracks.get((mod, label))
        lo = time_ns - self._window_ns
        values = []
        for t, v in reversed(track or ()):  # newest first; reports arrive at most REORDER_NS out of order
            if t <= lo - REORDER_NS:
                break
            if lo < t <= time_ns:
                values.append(v)
        pooled = 0.0 if not values else max(values) if self.config.pool == "max" else sum(values) / len(values)
        self._pool_cache[key] = pooled
        return pooled

    def _combine(self, rule: FusionRule, time_ns: int) -> tuple[float, tuple[str, ...], dict[str, float]]:
        mods = [m for m in rule.requires if m in self._seen]
        if not mods:
            return 0.0, (), {}
        per = {m: self._pooled(m, rule.label, time_ns) for m in mods}
        total = sum(rule.weight(m) for m in mods)
        fused = sum(rule.weight(m) * per[m] for m in mods) / total
        support = tuple(m for m in mods if per[m] >= self.config.support_threshold)
        return fused, support, per

    def _evaluate(self, rule: FusionRule, time_ns: int, best: str | None) -> FusedEvent | None:
        cfg, label = self.config, rule.label
        fused, support, per = self._combine(rule, time_ns)
        enter, exit_ = cfg.thresholds(rule)
        run = self._runs.get(label)
        if run is not None and run.emitted:
            if fused >= exit_:
                run.end_ns = max(run.end_ns, time_ns)
                if fused > run.peak:
                    run.peak, run.support, run.per_modality = fused, support, per
            else:
                self._end_run(label)
            return None
        seen = sum(1 for m in rule.requires if m in self._seen)
        holds = fused >= enter and len(support) >= min(rule.min_modalities, seen)
        holds = holds and (best == label or not cfg.is_exclusive(rule))
        if not holds or time_ns < self._cooldown_until_ns.get(label, -(2**62)):
            self._runs.pop(label, None)
            return None
        if run is None:
            run = self._runs[label] = _Run(time_ns, time_ns, fused, support, per)
        else:
            run.end_ns = max(run.end_ns, time_ns)
            if fused > run.peak:
                run.peak, run.support, run.per_modality = fused, support, per
        if (time_ns - run.start_ns) / 1e9 >= cfg.min_duration_s - 1e-9:
            run.emitted = True
            return run.to_event(label)
        return None

    def _end_run(self, label: str) -> None:
        run = self._runs.pop(label)
        if run.emitted:
            event = run.to_event(label)
            self._closed.append(event)
            self._cooldown_until_ns[label] = event.end_ns + round(self.config.cooldown_s * 1e9)
