"""Single-modality vs fused detection on a sim recording: embed, tune, detect, score.

Steps (used by ``benchmarks/fusion.py`` and ``tests/test_fusion.py``):

1. :func:`embed_tracks`: window each sensor stream of a recording with the bundle's
   window spec (frames every ``frame_stride``-th), embed with an
   :class:`~runtime.embedder.Embedder`, and keep every window's cosine with each
   prompt vector (a :class:`Track` per modality).
2. :func:`single_detections`: one :class:`~runtime.matching.Matcher` per modality over its
   track; only labels the modality can show are kept (a stronger baseline than letting
   an IMU report "alarm"). :func:`tune_single` picks the best :class:`MatchConfig` per
   modality on a tuning recording (overall F1).
3. :func:`fused_detections`: a :class:`~runtime.fusion.Fuser` fed every window of every
   modality in time order (time = window centre); :func:`tune_fusion` picks window,
   thresholds and the ``min_modalities`` policy on the same tuning recording.
4. :func:`runtime.evaluate.evaluate` against the recording's ground-truth timeline.

Recordings are duck-typed (``sensors.sim.generate`` output: ``streams[name]`` with
``info``, ``t_ns``, ``values``; ``timeline`` of events with ``label``, ``start_s``,
``end_s``) so this module stays within the runtime's dependency rule.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.embedder import Embedder
from runtime.evaluate import ClassScore, Evaluation, Interval, evaluate, truth_from_timeline
from runtime.fusion import Fuser, FusionConfig, default_rules
from runtime.matching import MatchConfig, Matcher
from runtime.prompts import Prompt, PromptBank
from runtime.types import Modality, Samples
from runtime.window_config import WindowConfig
from runtime.window_input import windows_to_batch
from runtime.windowing import Windower

SOURCE = "sim"


@dataclass(frozen=True)
class Track:
    """Every window of one modality: times and cosine with every prompt.

    Attributes:
        modality: modality name.
        start_ns: (N,) window starts.
        end_ns: (N,) window ends (frames: start + frame period).
        time_ns: (N,) the time the window's evidence refers to (window centre; frames: the frame time).
        unit: (N, D) unit embeddings.
        cosine: (N, P) cosine with each prompt, bank order.
        labels: the P prompt labels.
    """

    modality: str
    start_ns: NDArray[np.int64]
    end_ns: NDArray[np.int64]
    time_ns: NDArray[np.int64]
    unit: NDArray[np.float32]
    cosine: NDArray[np.float32]
    labels: tuple[str, ...]


def embed_tracks(
    embedder: Embedder, recording: Any, bank: PromptBank, streams: Sequence[str], frame_stride: int = 5
) -> dict[str, Track]:
    """Window, embed and score every stream of ``recording`` (see the module docstring)."""
    manifest = embedder.manifest
    out = {}
    for name in streams:
        mod = Modality(name)
        spec = manifest.spec(mod)
        stream = recording.streams[name]
        frames = spec.window.get("sample_rate_hz") is None
        config = WindowConfig.from_spec(spec, {"frame_stride": frame_stride} if frames else None)
        windows = Windower(stream.info, config).push(Samples(stream.info.stream_id, mod, stream.t_ns, stream.values))
        unit = embedder.embed(mod, windows_to_batch(windows, spec)).unit()
        start = np.array([w.start_ns for w in windows], dtype=np.int64)
        end = np.array([w.end_ns for w in windows], dtype=np.int64)
        time = start if frames else (start + end) // 2
        out[name] = Track(name, start, end, time, unit, bank.cosine(unit), bank.labels)
    return out


def truth_of(recording: Any) -> list[Interval]:
    """Ground-truth intervals of a recording (the sim clock starts at 0 ns)."""
    return truth_from_timeline(recording.timeline, SOURCE, 0)


def f1(score: ClassScore) -> float:
    """Harmonic mean of precision and recall (0 when either is 0 or undefined)."""
    p, r = score.precision, score.recall
    if math.isnan(p) or math.isnan(r) or p + r == 0:
        return 0.0
    return 2 * p * r / (p + r)


def single_detections(track: Track, bank: PromptBank, config: MatchConfig, shown: Iterable[str]) -> list[Interval]:
    """A Matcher over one modality's windows; detections of labels in ``shown`` only."""
    matcher = Matcher(bank, config)
    keep = set(shown)
    mod = Modality(track.modality)
    out: list[Interval] = []
    for i in range(len(track.time_ns)):
        matcher.update(SOURCE, mod, int(track.start_ns[i]), int(track.end_ns[i]), track.unit[i])
        out.extend(Interval(m.label, SOURCE, m.start_ns, m.end_ns) for m in matcher.closed() if m.label in keep)
    matcher.flush()
    out.extend(Interval(m.label, SOURCE, m.start_ns, m.end_ns) for m in matcher.closed() if m.label in keep)
    return out


def fused_detections(tracks: Mapping[str, Track], config: FusionConfig) -> list[Interval]:
    """A Fuser over every window of every track, in time order."""
    fuser = Fuser(config)
    order = sorted((int(t), name, i) for name, tr in tracks.items() for i, t in enumerate(tr.time_ns))
    out: list[Interval] = []
    for t, name, i in order:
        tr = tracks[name]
        fuser.update(t, name, dict(zip(tr.labels, tr.cosine[i].tolist(), strict=True)))
        out.extend(Interval(e.label, SOURCE, e.start_ns, e.end_ns) for e in fuser.closed())
    fuser.flush()
    out.extend(Interval(e.label, SOURCE, e.start_ns, e.end_ns) for e in fuser.closed())
    return out


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
    """The grid's best FusionConfig by overall F1, and that F1.

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


def bank_labels(bank: PromptBank) -> tuple[str, ...]:
    """The non-background labels of a bank."""
    return tuple(p.label for p in bank.prompts if not p.background)


def text_bank(embedder: Embedder, prompts: Sequence[Prompt]) -> PromptBank:
    """A prompt bank of text prompts embedded by the bundle's text tower."""
    from runtime.prompts import build_prompt_bank, bundle_text_embed

    return build_prompt_bank(prompts, bundle_text_embed(embedder), embedder.manifest.model_id)


def score_row(result: Evaluation) -> dict[str, Any]:
    """JSON-ready per-class and overall precision/recall/F1 of one detector."""

    def row(s: ClassScore) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 4)

        return {"detections": s.detections, "tp": s.true_positives, "truth": s.truth, "found": s.recalled,
                "precision": num(s.precision), "recall": num(s.recall), "f1": round(f1(s), 4)}  # fmt: skip

    return {"overall": row(result.overall), "per_class": {s.label: row(s) for s in result.per_class}}


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

    Returns a JSON-ready dict: ``configs`` (tuned), ``tune_f1``, ``results`` (detector ->
    per-class/overall scores over every evaluation recording together).
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
    fusion_cfg, tune_f1["fused"] = tune_fusion(
        tune_tracks, classes, tune_truth, labels, single_f1=class_f1, logit_scale=logit_scale, grid=fusion_grid
    )
    dets: dict[str, list[Interval]] = {name: [] for name in (*tune_tracks, "union", "fused")}
    truth_all: list[Interval] = []
    for k, (tracks, truth) in enumerate(eval_sets):
        src = f"{SOURCE}#{k}"  # keep recordings apart when pooling
        truth_all += [replace(t, source=src) for t in truth]
        for name, track in tracks.items():
            shown = [label for label, mods in classes if name in mods]
            found = [replace(d, source=src) for d in single_detections(track, bank, single_cfg[name], shown)]
            dets[name] += found
            dets["union"] += found
        dets["fused"] += [replace(d, source=src) for d in fused_detections(tracks, fusion_cfg)]
    results = {name: score_row(evaluate(d, truth_all, labels)) for name, d in dets.items()}
    return {
        "configs": {**{k: v.to_dict() for k, v in single_cfg.items()}, "fused": fusion_cfg.to_dict()},
        "tune_f1": {k: round(v, 4) for k, v in tune_f1.items()},
        "results": results,
    }
