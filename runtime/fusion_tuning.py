"""Tuning fusion on sim recordings: per-modality matchers, global fusion settings, per-class rules; held-out scoring.

Builds on :mod:`runtime.fusion_eval` (tracks, detections, scores). :func:`tune_single` picks
each modality's best :class:`~runtime.matching.MatchConfig` on a tuning recording;
:func:`tune_fusion` picks the fuser's window, thresholds, weights and ``min_modalities``
policy there; :func:`choose_rules` then picks each class's rule and operating point (its
fused rule or a rule over its best single modality, the global or its own enter threshold,
in or out of the exclusive competition), keeping a change only when it raises that class's
tuning F1 without lowering the overall one; :func:`compare` tunes on one recording (or
several joined by :func:`runtime.fusion_eval.concat_sets`) and scores single sensors, their
union and fusion on held-out ones. Used by ``benchmarks/fusion.py`` and the fusion tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from runtime.evaluate import Interval, evaluate
from runtime.fusion import FusionConfig, FusionRule, default_rules
from runtime.fusion_eval import (
    SOURCE,
    Track,
    bank_labels,
    f1,
    fused_detections,
    median_length_s,
    score_row,
    single_detections,
)
from runtime.matching import MatchConfig
from runtime.prompts import PromptBank

SINGLE_GRID: dict[str, tuple[Any, ...]] = {
    "scoring": ("softmax", "cosine"),
    "enter_threshold": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    "min_duration_s": (0.0, 1.0, 2.0),
}
FUSION_GRID: dict[str, tuple[Any, ...]] = {
    "window_s": (2.0, 3.0, 5.0),
    "enter_threshold": (0.4, 0.5, 0.6, 0.7),
    "support_threshold": (0.2,),
    "min_modalities": (1, "majority"),
    "min_duration_s": (0.0, 1.0),
    "weights": ("equal", "modality_f1", "class_f1"),
    "exclusive": (True, False),
}


def tune_single(
    track: Track,
    bank: PromptBank,
    shown: Iterable[str],
    truth: list[Interval],
    *,
    logit_scale: float = 10.0,
    grid: Mapping[str, tuple[Any, ...]] = SINGLE_GRID,
) -> tuple[MatchConfig, float]:
    """The grid's best MatchConfig for one modality by overall F1 over its shown labels, and that F1.

    ``grid`` has the keys of :data:`SINGLE_GRID`.
    """
    shown = tuple(shown)
    best: tuple[float, MatchConfig] | None = None
    for scoring, enter, dur in itertools.product(*(grid[k] for k in SINGLE_GRID)):
        cfg = MatchConfig(scoring=scoring, logit_scale=logit_scale, enter_threshold=enter,
                          exit_threshold=round(enter - 0.1, 6), min_duration_s=dur, cooldown_s=1.0)  # fmt: skip
        score = f1(evaluate(single_detections(track, bank, cfg, shown), truth, bank_labels(bank)).overall)
        if best is None or score > best[0]:
            best = (score, cfg)
    assert best is not None
    return best[1], best[0]


def tune_fusion(
    tracks: Mapping[str, Track],
    classes: Iterable[tuple[str, Iterable[str]]],
    truth: list[Interval],
    labels: Iterable[str],
    *,
    single_f1: Mapping[str, Mapping[str, float]] | None = None,
    logit_scale: float = 10.0,
    grid: Mapping[str, tuple[Any, ...]] = FUSION_GRID,
) -> tuple[FusionConfig, float]:
    """The grid's best FusionConfig by overall F1 (the same rule form for every class), and that F1.

    :func:`choose_rules` then adapts each class's rule; :func:`compare` runs both.

    ``single_f1`` (modality -> label -> F1 of that modality's tuned Matcher on the class,
    ``"overall"`` for all its classes) enables the weightings ``"class_f1"`` (in the rule of
    a class, a modality's weight is its own F1 on that class) and ``"modality_f1"`` (its
    overall F1 in every rule); floored at 0.05. ``grid`` has the keys of :data:`FUSION_GRID`.
    """
    classes, labels = list(classes), tuple(labels)
    best: tuple[float, FusionConfig] | None = None
    tables: dict[str, Any] = {"equal": None}
    if single_f1:
        tables["class_f1"] = {label: {m: max(0.05, f.get(label, 0.0)) for m, f in single_f1.items()}
                              for label, _ in classes}  # fmt: skip
        tables["modality_f1"] = {label: {m: max(0.05, f.get("overall", 0.0)) for m, f in single_f1.items()}
                                 for label, _ in classes}  # fmt: skip
    for window, enter, support, policy, dur, weighting, excl in itertools.product(*(grid[k] for k in FUSION_GRID)):
        if weighting not in tables:
            continue
        rules = default_rules(classes, tracks, policy, tables[weighting])
        cfg = FusionConfig(rules, logit_scale=logit_scale, window_s=window, enter_threshold=enter,
                           exit_threshold=round(enter - 0.1, 6), support_threshold=support, min_duration_s=dur,
                           exclusive=excl)  # fmt: skip
        score = f1(evaluate(fused_detections(tracks, cfg), truth, labels).overall)
        if best is None or score > best[0]:
            best = (score, cfg)
    assert best is not None
    return best[1], best[0]


RULE_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def choose_rules(
    tracks: Mapping[str, Track],
    truth: list[Interval],
    labels: Iterable[str],
    config: FusionConfig,
    single_f1: Mapping[str, Mapping[str, float]],
    *,
    thresholds: Sequence[float] = RULE_THRESHOLDS,
    min_events: int = 3,
    non_exclusive: bool = True,
) -> tuple[FusionConfig, dict[str, str]]:
    """Per class, choose its rule and operating point on the tuning recording: fused, or its best single modality.

    The global settings of ``config`` (found by :func:`tune_fusion`) fit most classes, but a
    class that one sensor shows and the others cannot tell apart (running: the IMU gait) is
    diluted below threshold by the fused mean, and the classes' scores sit on different
    levels. So, for each rule of ``config`` in rule order, the candidates are:

    - its rule as tuned, with the config's thresholds (the incumbent);
    - the same rule with its own ``enter_threshold`` ``t`` for each ``t`` in ``thresholds``;
    - for a rule over several modalities, a rule over its best single modality ``m``, the one
      whose tuned single-modality Matcher has the highest F1 on the class
      (``single_f1[m][label]``, same tuning recording; none when all are 0):
      ``FusionRule(label, (m,), min_modalities=1)`` with the config's thresholds or with
      ``enter_threshold=t`` for each ``t``;
    - when ``non_exclusive`` and the rule takes part in the exclusive competition, each of the above (the incumbent
      included) with ``exclusive=False``: a class that every sensor scores below a confusable
      class (running / walking under "approach" with the demo model) never wins the
      competition, whatever its threshold, but may be found outside it.

    A candidate with its own ``enter_threshold = t`` gets ``exit_threshold = t * r``, ``r`` =
    the config's ``exit_threshold / enter_threshold`` (the same relative hysteresis: a fixed gap
    would put a low threshold's exit at 0, and an event that never closes overlaps every event).
    A candidate replaces the incumbent only if it raises the class's F1 on ``tracks``/``truth``
    strictly and does not lower the overall F1 (with ``exclusive`` the rules compete, so one
    class's gain must not be another's loss); the highest class F1 wins (ties: the earlier
    candidate, in the order above), and later classes are chosen with it in place. The global
    settings are unchanged. A class with fewer than ``min_events`` ground-truth events in
    ``truth`` keeps its rule: one lucky hit on a single event would decide otherwise (on a
    short tuning recording such switches lose on held-out data); tune on several recordings
    (:func:`concat_sets`) so that every class has enough. Evaluation recordings must never be
    passed here.

    Returns:
        The config with the chosen rules, and label -> choice (``"fused"``, ``"fused, enter 0.3"``,
        ``"imu"``, ``"imu, enter 0.1"``, ``"imu, enter 0.1, not exclusive"``).
    """
    labels = tuple(labels)
    rules = list(config.rules)
    choice = {r.label: "fused" for r in rules}

    def score(i: int, rule: FusionRule) -> tuple[float, float]:
        candidate = replace(config, rules=(*rules[:i], rule, *rules[i + 1 :]))
        result = evaluate(fused_detections(tracks, candidate), truth, labels)
        return next((f1(s) for s in result.per_class if s.label == rule.label), 0.0), f1(result.overall)

    for i, rule in enumerate(config.rules):
        if sum(1 for t in truth if t.label == rule.label) < min_events:
            continue
        candidates = [(f"fused, enter {t:g}", _with_thresholds(config, rule, t)) for t in thresholds]
        mods = [m for m in rule.requires if single_f1.get(m, {}).get(rule.label, 0.0) > 0.0]
        if len(rule.requires) > 1 and mods:
            best_mod = max(mods, key=lambda m: single_f1[m][rule.label])
            single = FusionRule(rule.label, (best_mod,), {}, 1)
            candidates.append((best_mod, single))
            candidates += [(f"{best_mod}, enter {t:g}", _with_thresholds(config, single, t)) for t in thresholds]
        if non_exclusive and config.is_exclusive(rule):
            both = [("fused", rule), *candidates]
            candidates += [(f"{name}, not exclusive", replace(c, exclusive=False)) for name, c in both]
        base_own, base_all = score(i, rule)
        best: tuple[float, str, FusionRule] | None = None
        for name, candidate in candidates:
            own, overall = score(i, candidate)
            if own > base_own and overall >= base_all and (best is None or own > best[0]):
                best = (own, name, candidate)
        if best is not None:
            choice[rule.label], rules[i] = best[1], best[2]
    return replace(config, rules=tuple(rules)), choice


def _with_thresholds(config: FusionConfig, rule: FusionRule, enter: float) -> FusionRule:
    """``rule`` with its own enter threshold and the config's relative hysteresis below it."""
    ratio = config.exit_threshold / config.enter_threshold if config.enter_threshold > 0 else 1.0
    exit_ = round(enter * ratio, 4) if 0 <= ratio <= 1 else enter
    return replace(rule, enter_threshold=enter, exit_threshold=exit_)


def compare(
    tune_tracks: Mapping[str, Track],
    tune_truth: list[Interval],
    eval_sets: Sequence[tuple[Mapping[str, Track], list[Interval]]],
    bank: PromptBank,
    classes: Iterable[tuple[str, Iterable[str]]],
    *,
    logit_scale: float = 10.0,
    single_grid: Mapping[str, tuple[Any, ...]] = SINGLE_GRID,
    fusion_grid: Mapping[str, tuple[Any, ...]] = FUSION_GRID,
) -> dict[str, Any]:
    """Tune on one recording, then score single modalities, their union and fusion on the others (pooled).

    Several tuning recordings: join them with :func:`concat_sets` first. Fusion is tuned in
    two steps, both on the tuning recording only: :func:`tune_fusion` (the
    global settings, detector ``fused_global``), then :func:`choose_rules` (each class's rule
    and operating point, detector ``fused``).

    Returns a JSON-ready dict: ``configs`` (tuned; ``fused_global`` and ``fused``),
    ``rule_choice`` (label -> :func:`choose_rules`' choice), ``tune_f1``, ``results``
    (detector -> per-class/overall scores over every evaluation recording together, and
    ``median_length_s`` of its detections; ``truth`` -> that of the ground-truth events).
    """
    classes = [(label, tuple(str(getattr(m, "value", m)) for m in mods)) for label, mods in classes]
    labels = bank_labels(bank)
    single_cfg, tune_f1, class_f1 = {}, {}, {}
    for name, track in tune_tracks.items():
        shown = [label for label, mods in classes if name in mods]
        single_cfg[name], tune_f1[name] = tune_single(
            track, bank, shown, tune_truth, logit_scale=logit_scale, grid=single_grid
        )
        tuned = evaluate(single_detections(track, bank, single_cfg[name], shown), tune_truth, labels)
        class_f1[name] = {s.label: f1(s) for s in (*tuned.per_class, tuned.overall)}
    global_cfg, tune_f1["fused_global"] = tune_fusion(
        tune_tracks, classes, tune_truth, labels, single_f1=class_f1, logit_scale=logit_scale, grid=fusion_grid
    )
    fusion_cfg, choice = choose_rules(tune_tracks, tune_truth, labels, global_cfg, class_f1)
    tune_f1["fused"] = f1(evaluate(fused_detections(tune_tracks, fusion_cfg), tune_truth, labels).overall)
    fused = {"fused_global": global_cfg, "fused": fusion_cfg}
    dets: dict[str, list[Interval]] = {name: [] for name in (*tune_tracks, "union", *fused)}
    truth_all: list[Interval] = []
    for k, (tracks, truth) in enumerate(eval_sets):
        src = f"{SOURCE}#{k}"  # keep recordings apart when pooling
        truth_all += [replace(t, source=src) for t in truth]
        for name, track in tracks.items():
            shown = [label for label, mods in classes if name in mods]
            found = [replace(d, source=src) for d in single_detections(track, bank, single_cfg[name], shown)]
            dets[name] += found
            dets["union"] += found
        for name, cfg in fused.items():
            dets[name] += [replace(d, source=src) for d in fused_detections(tracks, cfg)]
    results = {name: score_row(evaluate(d, truth_all, labels)) | {"median_length_s": median_length_s(d)}
               for name, d in dets.items()}  # fmt: skip
    return {
        "configs": {**{k: v.to_dict() for k, v in single_cfg.items()}, **{k: v.to_dict() for k, v in fused.items()}},
        "rule_choice": choice,
        "tune_f1": {k: round(v, 4) for k, v in tune_f1.items()},
        "results": results,
        "truth": {"events": len(truth_all), "median_length_s": median_length_s(truth_all)},
    }
