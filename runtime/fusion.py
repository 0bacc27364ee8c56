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
   ``fused >= enter_threshold`` and ``support >= min_modalities`` (capped at the number
   of modalities seen); the event is emitted (onset) once those conditions held on
   every evaluation for ``min_duration_s``; an emitted event stays open while
   ``fused >= exit_threshold`` and closes on the first evaluation below it; after it
   closes, the label cannot start a new run until ``cooldown_s`` after its end. With
   ``exclusive`` (default) a run can only start for the label whose fused score is the
   highest of all rules at that time (as the Matcher lets only the best prompt open);
   open events are not closed by a competitor.

The fuser evaluates a label each time one of its required modalities reports, at that
report's time. Times are whatever the caller passes (monotonic ns); pass the time the
window's evidence refers to (its centre is a good choice: a 5 s IMU window reported at
its end would lag the event by 2.5 s). Reports may arrive slightly out of order across
modalities; pooling is by time, not by arrival.

Configuration (JSON / TOML table ``[fusion]``)::

    window_s = 3.0
    enter_threshold = 0.4
    [fusion.rules.fall]
    requires = ["imu", "audio", "thermal"]
    weights = {imu = 2.0}
    min_modalities = 2
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from runtime.errors import ConfigError

CALIBRATIONS = ("softmax", "zscore", "cosine")
POOLS = ("max", "mean")
SENSOR_MODALITIES = ("audio", "imu", "depth", "thermal", "vision")


@dataclass(frozen=True)
class FusionRule:
    """Which modalities can show one label and how they are combined.

    Attributes:
        label: the prompt label the rule fuses.
        requires: modality names whose evidence counts (e.g. ``("imu", "audio", "thermal")``).
        weights: per-modality weight in the weighted mean (missing: 1.0).
        min_modalities: how many required modalities must each reach ``support_threshold``
            within the window (capped at the number of required modalities the fuser has seen).
    """

    label: str
    requires: tuple[str, ...]
    weights: Mapping[str, float] = field(default_factory=dict)
    min_modalities: int = 1

    def __post_init__(self) -> None:
        where = f"fusion rule {self.label!r}"
        if not isinstance(self.label, str) or not self.label:
            raise ConfigError(f"fusion rule: label {self.label!r} must be a non-empty string")
        requires = tuple(self.requires) if isinstance(self.requires, (list, tuple)) else None
        if not requires or not all(isinstance(m, str) for m in requires):
            raise ConfigError(f"{where}: requires must be a non-empty list of modality names, got {self.requires!r}")
        if len(set(requires)) != len(requires):
            raise ConfigError(f"{where}: requires {list(requires)} names a modality twice")
        object.__setattr__(self, "requires", requires)
        if not isinstance(self.weights, Mapping):
            raise ConfigError(f"{where}: weights must be a table modality -> number, got {self.weights!r}")
        weights = {}
        for mod, w in self.weights.items():
            if mod not in requires:
                raise ConfigError(f"{where}: weight for {mod!r}, which is not in requires {list(requires)}")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
                raise ConfigError(f"{where}: weight of {mod!r} = {w!r} must be a finite number > 0")
            weights[mod] = float(w)
        object.__setattr__(self, "weights", weights)
        n = self.min_modalities
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(requires):
            raise ConfigError(f"{where}: min_modalities {n!r} must be an integer in 1..{len(requires)}")

    def weight(self, modality: str) -> float:
        """The weight of ``modality`` (1.0 unless set)."""
        return float(self.weights.get(modality, 1.0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``label`` included)."""
        return {"label": self.label, "requires": list(self.requires), "weights": dict(self.weights),
                "min_modalities": self.min_modalities}  # fmt: skip


@dataclass(frozen=True)
class FusionConfig:
    """How per-modality scores become fused events (see the module docstring).

    Attributes:
        rules: one rule per fused label.
        calibration: ``"softmax"``, ``"zscore"`` or ``"cosine"``.
        logit_scale: softmax inverse temperature (the bundle's text ``output_scale`` is a fair choice).
        zscore_halflife_s: half-life of the running mean/variance for ``"zscore"``.
        zscore_warmup: windows per (modality, label) before z-scores count (0 until then).
        window_s: the time window evidence is pooled over, seconds.
        pool: ``"max"`` or ``"mean"`` of a modality's scores within the window.
        support_threshold: calibrated score a modality must reach to count towards ``min_modalities``.
        enter_threshold: fused score to open an event.
        exit_threshold: fused score below which an open event closes (<= enter_threshold).
        min_duration_s: seconds the open conditions must hold before the event is emitted.
        cooldown_s: seconds after an event ends before the label may re-open.
        exclusive: only the label with the highest fused score at an evaluation may start a run.
    """

    rules: tuple[FusionRule, ...]
    calibration: str = "softmax"
    logit_scale: float = 10.0
    zscore_halflife_s: float = 60.0
    zscore_warmup: int = 10
    window_s: float = 3.0
    pool: str = "max"
    support_threshold: float = 0.3
    enter_threshold: float = 0.4
    exit_threshold: float = 0.3
    min_duration_s: float = 0.0
    cooldown_s: float = 1.0
    exclusive: bool = True

    def __post_init__(self) -> None:
        rules = tuple(self.rules) if isinstance(self.rules, (list, tuple)) else None
        if not rules or not all(isinstance(r, FusionRule) for r in rules):
            raise ConfigError("fusion config: rules must be a non-empty list of fusion rules")
        labels = [r.label for r in rules]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ConfigError(f"fusion config: label {dup[0]!r} has more than one rule")
        object.__setattr__(self, "rules", rules)
        for name, allowed in (("calibration", CALIBRATIONS), ("pool", POOLS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"fusion config: {name} {getattr(self, name)!r} must be one of {', '.join(allowed)}")
        numbers = ("logit_scale", "zscore_halflife_s", "window_s", "support_threshold", "enter_threshold",
                   "exit_threshold", "min_duration_s", "cooldown_s")  # fmt: skip
        for name in numbers:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"fusion config: {name} = {value!r} must be a finite number")
        for name in ("logit_scale", "zscore_halflife_s", "window_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"fusion config: {name} {getattr(self, name)} must be > 0")
        for name in ("min_duration_s", "cooldown_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"fusion config: {name} {getattr(self, name)} must be >= 0")
        if isinstance(self.zscore_warmup, bool) or not isinstance(self.zscore_warmup, int) or self.zscore_warmup < 0:
            raise ConfigError(f"fusion config: zscore_warmup {self.zscore_warmup!r} must be an integer >= 0")
        if not isinstance(self.exclusive, bool):
            raise ConfigError(f"fusion config: exclusive {self.exclusive!r} must be true or false")
        if self.exit_threshold > self.enter_threshold:
            raise ConfigError(f"fusion config: exit_threshold {self.exit_threshold} must be <= "
                              f"enter_threshold {self.enter_threshold}")  # fmt: skip

    @property
    def labels(self) -> tuple[str, ...]:
        """The fused labels, rule order."""
        return tuple(r.label for r in self.rules)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "fusion config") -> FusionConfig:
        """Build from a JSON object or TOML table; unknown keys / bad values raise a one-line ConfigError.

        ``rules`` is either a table ``label -> {requires, weights, min_modalities}`` or a
        list of such tables each with a ``label``.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (valid keys: {', '.join(names)})")
        if "rules" not in data:
            raise ConfigError(f"{where}: rules missing (one table per fused label)")
        kwargs = dict(data)
        items = _rule_items(data["rules"], where)
        kwargs["rules"] = tuple(_rule_from_dict(label, body, where) for label, body in items)
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}".replace(f"{where}: fusion config: ", f"{where}: ")) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, ``rules`` as a table label -> rule (round-trips through :meth:`from_dict`)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rules"}
        out["rules"] = {r.label: {k: v for k, v in r.to_dict().items() if k != "label"} for r in self.rules}
        return out


def _rule_items(rules: Any, where: str) -> list[tuple[str, Any]]:
    if isinstance(rules, Mapping):
        return [(str(k), v) for k, v in rules.items()]
    if isinstance(rules, (list, tuple)):
        items = []
        for i, body in enumerate(rules):
            if not isinstance(body, Mapping) or "label" not in body:
                raise ConfigError(f"{where}: rules[{i}] must be a table with a label")
            items.append((str(body["label"]), {k: v for k, v in body.items() if k != "label"}))
        return items
    raise ConfigError(f"{where}: rules must be a table label -> rule or a list of rules, got {type(rules).__name__}")


def _rule_from_dict(label: str, body: Any, where: str) -> FusionRule:
    if not isinstance(body, Mapping):
        raise ConfigError(f"{where}: rules.{label} must be a table, got {type(body).__name__}")
    valid = ("requires", "weights", "min_modalities")
    unknown = sorted(set(body) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: rules.{label}: unknown key {unknown[0]!r} (valid keys: {', '.join(valid)})")
    if "requires" not in body:
        raise ConfigError(f"{where}: rules.{label}: requires missing")
    try:
        return FusionRule(label, body["requires"], body.get("weights", {}), body.get("min_modalities", 1))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


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
            self._seen.add(mod)
            for label, value in calibrated.items():
                track = self._tracks.setdefault((mod, label), deque())
                track.append((int(time_ns), value))
                while track and track[0][0] <= time_ns - self._window_ns - 60_000_000_000:
                    track.popleft()  # keep a generous margin for out-of-order reports
            opened = []
            rules = self._by_modality.get(mod, ())
            best = None
            if self.config.exclusive and rules:
                best = max(self.config.rules, key=lambda r: self._combine(r, int(time_ns))[0]).label
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
        track = self._tracks.get((mod, label))
        if not track:
            return 0.0
        lo = time_ns - self._window_ns
        values = [v for t, v in track if lo < t <= time_ns]
        if not values:
            return 0.0
        return max(values) if self.config.pool == "max" else sum(values) / len(values)

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
        run = self._runs.get(label)
        if run is not None and run.emitted:
            if fused >= cfg.exit_threshold:
                run.end_ns = max(run.end_ns, time_ns)
                if fused > run.peak:
                    run.peak, run.support, run.per_modality = fused, support, per
            else:
                self._end_run(label)
            return None
        seen = sum(1 for m in rule.requires if m in self._seen)
        holds = fused >= cfg.enter_threshold and len(support) >= min(rule.min_modalities, seen)
        holds = holds and (best is None or best == label)
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


def default_rules(
    classes: Iterable[tuple[str, Iterable[str]]],
    available: Iterable[str],
    min_modalities: str | int = "majority",
    weights: Mapping[str, Mapping[str, float]] | None = None,
) -> tuple[FusionRule, ...]:
    """One rule per class over the modalities that can show it and are available.

    Args:
        classes: ``(label, modality names that show it)`` pairs.
        available: the modality names the robot streams.
        min_modalities: an int (capped per rule), ``"majority"`` (more than half of the
            rule's modalities), ``"all"``, or ``"all_but_one"`` (at least 1).
        weights: label -> modality -> weight (e.g. each modality's single-modality F1
            on that class, measured on tuning data, so the sensors that show a class
            reliably count more); missing entries (or None): 1.
    """
    avail = [str(getattr(m, "value", m)) for m in available]
    rules = []
    for label, mods in classes:
        names = {str(getattr(m, "value", m)) for m in mods}
        requires = tuple(m for m in avail if m in names)
        if not requires:
            continue
        n = len(requires)
        if isinstance(min_modalities, int):
            k = min(max(1, min_modalities), n)
        elif min_modalities == "majority":
            k = n // 2 + 1
        elif min_modalities == "all":
            k = n
        elif min_modalities == "all_but_one":
            k = max(1, n - 1)
        else:
            raise ConfigError(f"fusion: min_modalities policy {min_modalities!r} must be an int, majority, all "
                              "or all_but_one")  # fmt: skip
        table = (weights or {}).get(label, {})
        w = {m: float(table[m]) for m in requires if m in table}
        rules.append(FusionRule(label, requires, w, k))
    return tuple(rules)
