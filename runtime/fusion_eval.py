"""Single-modality vs fused detection on a sim recording: embed, detect, score (tuning: :mod:`runtime.fusion_tuning`).

Steps (used by ``benchmarks/fusion.py`` and ``tests/test_fusion.py``; the ones named here but
defined in :mod:`runtime.fusion_tuning`: ``tune_single``, ``tune_fusion``, ``choose_rules``,
``compare``):

1. :func:`embed_tracks`: window each sensor stream of a recording with the bundle's
   window spec (frames every ``frame_stride``-th), embed with an
   :class:`~runtime.embedder.Embedder`, and keep every window's cosine with each
   prompt vector (a :class:`Track` per modality).
2. :func:`single_detections`: one :class:`~runtime.matching.Matcher` per modality over its
   track; only labels the modality can show are kept (a stronger baseline than letting
   an IMU report "alarm"). ``tune_single`` picks the best :class:`MatchConfig` per
   modality on a tuning recording (overall F1; :mod:`runtime.fusion_tuning`).
3. :func:`fused_detections`: a :class:`~runtime.fusion.Fuser` fed every window of every
   modality in time order (time = window centre); ``tune_fusion`` picks window,
   thresholds, weights and the ``min_modalities`` policy on the same tuning recording, then
   ``choose_rules`` picks each class's rule there: its fused rule or a rule over its best
   single modality, each with the global or its own enter threshold, in or out of the
   exclusive competition, keeping a change only when it raises that class's tuning F1
   without lowering the overall one.
4. :func:`runtime.evaluate.evaluate` against the recording's ground-truth timeline
   (``compare`` does steps 2-4: tune on one recording, or several joined by
   :func:`concat_sets`, score on held-out ones).

Recordings are duck-typed (``sensors.sim.generate`` output: ``streams[name]`` with
``info``, ``t_ns``, ``values``; ``timeline`` of events with ``label``, ``start_s``,
``end_s``) so this module stays within the runtime's dependency rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.embedder import Embedder
from runtime.evaluate import ClassScore, Evaluation, Interval, truth_from_timeline
from runtime.fusion import Fuser, FusionConfig
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


def concat_sets(
    sets: Sequence[tuple[Mapping[str, Track], list[Interval]]], gap_s: float = 120.0
) -> tuple[dict[str, Track], list[Interval]]:
    """Several recordings' ``(tracks, truth)`` as one, each shifted to start ``gap_s`` after the previous one ends.

    Tuning on one short recording leaves rare classes with one or two events (too few for
    ``choose_rules``); joining recordings end to end keeps every tuning function unchanged.
    The gap (longer than any window, hysteresis, cooldown and the Fuser's 60 s margin) keeps
    a detector's state from carrying evidence from one recording into the next.

    Raises:
        ValueError: no sets, or the sets do not have the same modalities.
    """
    if not sets:
        raise ValueError("concat_sets: no recordings given; pass at least one (tracks, truth)")
    names = list(sets[0][0])
    tracks: dict[str, list[Track]] = {name: [] for name in names}
    truth: list[Interval] = []
    offset_ns = 0
    for k, (trs, tru) in enumerate(sets):
        if sorted(trs) != sorted(names):
            raise ValueError(f"concat_sets: recording {k} has streams {sorted(trs)}, the first has {sorted(names)}")
        for name in names:
            tr = trs[name]
            tracks[name].append(replace(tr, start_ns=tr.start_ns + offset_ns, end_ns=tr.end_ns + offset_ns,
                                        time_ns=tr.time_ns + offset_ns))  # fmt: skip
        truth += [replace(t, start_ns=t.start_ns + offset_ns, end_ns=t.end_ns + offset_ns) for t in tru]
        ends = [int(trs[n].end_ns.max()) for n in names if trs[n].end_ns.size] + [t.end_ns for t in tru]
        offset_ns += max(ends, default=0) + round(gap_s * 1e9)
    joined = {name: Track(name, *(np.concatenate([getattr(t, f) for t in parts])
                                  for f in ("start_ns", "end_ns", "time_ns", "unit", "cosine")), parts[0].labels)
              for name, parts in tracks.items()}  # fmt: skip
    return joined, truth


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


def median_length_s(intervals: Sequence[Interval]) -> float | None:
    """Median length of the intervals, seconds (None when there are none)."""
    if not intervals:
        return None
    return round(float(np.median([(i.end_ns - i.start_ns) / 1e9 for i in intervals])), 2)
