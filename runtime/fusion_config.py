"""Cross-sensor fusion configuration: :class:`FusionRule`, :class:`FusionConfig`, :func:`default_rules`.

How a :class:`~runtime.fusion.Fuser` uses these settings (calibration, pooling,
weighted mean, support, hysteresis) is documented in :mod:`runtime.fusion`.

Configuration (JSON / TOML table ``[fusion]``)::

    window_s = 3.0
    enter_threshold = 0.4
    [fusion.rules.fall]
    requires = ["imu", "audio", "thermal"]
    weights = {imu = 2.0}
    min_modalities = 2
    [fusion.rules.running]
    requires = ["imu"]
    enter_threshold = 0.2   # optional per-rule thresholds (default: the config's)
    exit_threshold = 0.15
    exclusive = false       # optional: outside the exclusive competition (default: the config's)

Keys starting with ``_`` (at the top level or in a rule) are provenance/comments and are
ignored by :meth:`FusionConfig.from_dict`; ``benchmarks/fusion.py --write-config`` puts
its provenance under ``_about``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from runtime.errors import ConfigError

CALIBRATIONS = ("softmax", "zscore", "cosine")
POOLS = ("max", "mean")
SENSOR_MODALITIES = ("audio", "imu", "depth", "thermal", "vision")
RULE_KEYS = ("requires", "weights", "min_modalities", "enter_threshold", "exit_threshold", "exclusive")


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class FusionRule:
    """Which modalities can show one label and how they are combined.

    Attributes:
        label: the prompt label the rule fuses.
        requires: modality names whose evidence counts (e.g. ``("imu", "audio", "thermal")``).
        weights: per-modality weight in the weighted mean (missing: 1.0).
        min_modalities: how many required modalities must each reach ``support_threshold``
            within the window (capped at the number of required modalities the fuser has seen).
        enter_threshold: this rule's fused score to open an event; None (default) = the
            config's ``enter_threshold``. A rule over one modality usually needs its own: its
            fused score is that modality's alone, not a mean diluted by the others.
        exit_threshold: this rule's fused score below which its open event closes; None
            (default) = the config's ``exit_threshold``, capped at the rule's enter threshold
            (:meth:`FusionConfig.thresholds`).
        exclusive: whether the rule takes part in the exclusive competition; None (default) =
            the config's ``exclusive`` (:meth:`FusionConfig.is_exclusive`). A non-exclusive rule
            may start a run whatever the other rules score, and its score never blocks them: for
            a class that one sensor shows but that every sensor also scores below a confusable
            class (the IMU gait classes under "approach" with the demo model), which the
            competition would otherwise always suppress.
    """

    label: str
    requires: tuple[str, ...]
    weights: Mapping[str, float] = field(default_factory=dict)
    min_modalities: int = 1
    enter_threshold: float | None = None
    exit_threshold: float | None = None
    exclusive: bool | None = None

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
            if not _is_number(w) or w <= 0:
                raise ConfigError(f"{where}: weight of {mod!r} = {w!r} must be a finite number > 0")
            weights[mod] = float(w)
        object.__setattr__(self, "weights", weights)
        n = self.min_modalities
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(requires):
            raise ConfigError(f"{where}: min_modalities {n!r} must be an integer in 1..{len(requires)}")
        for name in ("enter_threshold", "exit_threshold"):
            value = getattr(self, name)
            if value is not None and not _is_number(value):
                raise ConfigError(f"{where}: {name} = {value!r} must be a finite number (or left out for the config's)")
            object.__setattr__(self, name, None if value is None else float(value))
        if self.exclusive is not None and not isinstance(self.exclusive, bool):
            raise ConfigError(f"{where}: exclusive {self.exclusive!r} must be true or false (or left out for the "
                              "config's)")  # fmt: skip
        if self.enter_threshold is not None and self.exit_threshold is not None:
            if self.exit_threshold > self.enter_threshold:
                raise ConfigError(f"{where}: exit_threshold {self.exit_threshold} must be <= "
                                  f"enter_threshold {self.enter_threshold}")  # fmt: skip

    def weight(self, modality: str) -> float:
        """The weight of ``modality`` (1.0 unless set)."""
        return float(self.weights.get(modality, 1.0))

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-ready dict (``label`` included; the thresholds and ``exclusive`` only when set)."""
        out: dict[str, Any] = {"label": self.label, "requires": list(self.requires), "weights": dict(self.weights),
                               "min_modalities": self.min_modalities}  # fmt: skip
        for name in ("enter_threshold", "exit_threshold", "exclusive"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class FusionConfig:
    """How per-modality scores become fused events (see :mod:`runtime.fusion`).

    Attributes:
        rules: one rule per fused label.
        calibration: ``"softmax"``, ``"zscore"`` or ``"cosine"``.
        logit_scale: softmax inverse temperature (the bundle's text ``output_scale`` is a fair choice).
        zscore_halflife_s: half-life of the running mean/variance for ``"zscore"``.
        zscore_warmup: windows per (modality, label) before z-scores count (0 until then).
        window_s: the time window evidence is pooled over, seconds.
        pool: ``"max"`` or ``"mean"`` of a modality's scores within the window.
        support_threshold: calibrated score a modality must reach to count towards ``min_modalities``.
        enter_threshold: fused score to open an event (rules without their own).
        exit_threshold: fused score below which an open event closes (<= enter_threshold).
        min_duration_s: seconds the open conditions must hold before the event is emitted.
        cooldown_s: seconds after an event ends before the label may re-open.
        exclusive: only the label with the highest fused score at an evaluation may start a run
            (among the rules that compete: :meth:`is_exclusive`).
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
            if not _is_number(getattr(self, name)):
                raise ConfigError(f"fusion config: {name} = {getattr(self, name)!r} must be a finite number")
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
        for rule in rules:
            enter, exit_ = self.thresholds(rule)
            if exit_ > enter:
                raise ConfigError(f"fusion config: rule {rule.label!r}: exit_threshold {exit_} must be <= "
                                  f"its enter_threshold {enter}")  # fmt: skip

    @property
    def labels(self) -> tuple[str, ...]:
        """The fused labels, rule order."""
        return tuple(r.label for r in self.rules)

    def thresholds(self, rule: FusionRule) -> tuple[float, float]:
        """``(enter, exit)`` fused-score thresholds of ``rule``: its own where set, else the config's.

        An exit threshold the rule leaves out is the config's, capped at the rule's enter
        threshold (a rule entering at 0.2 under a config exiting at 0.5 gets no hysteresis).
        """
        enter = self.enter_threshold if rule.enter_threshold is None else rule.enter_threshold
        if rule.exit_threshold is not None:
            return enter, rule.exit_threshold
        return enter, min(self.exit_threshold, enter)

    def is_exclusive(self, rule: FusionRule) -> bool:
        """Whether ``rule`` competes for the start of a run: its own ``exclusive`` where set, else the config's."""
        return self.exclusive if rule.exclusive is None else rule.exclusive

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "fusion config") -> FusionConfig:
        """Build from a JSON object or TOML table; unknown keys / bad values raise a one-line ConfigError.

        ``rules`` is either a table ``label -> {requires, weights, min_modalities, enter_threshold,
        exit_threshold, exclusive}`` (all but ``requires`` optional) or a list of such tables each with a
        ``label``. Keys starting with ``_`` are ignored (provenance such as ``_about``).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
        data = {k: v for k, v in data.items() if not str(k).startswith("_")}
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
    body = {k: v for k, v in body.items() if not str(k).startswith("_")}
    unknown = sorted(set(body) - set(RULE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: rules.{label}: unknown key {unknown[0]!r} (valid keys: {', '.join(RULE_KEYS)})")
    if "requires" not in body:
        raise ConfigError(f"{where}: rules.{label}: requires missing")
    try:
        return FusionRule(label, body["requires"], body.get("weights", {}), body.get("min_modalities", 1),
                          body.get("enter_threshold"), body.get("exit_threshold"), body.get("exclusive"))  # fmt: skip
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


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
