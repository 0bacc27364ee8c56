"""Score detected events against a ground-truth timeline: per-class and overall precision/recall.

A detection is a true positive when a ground-truth event of the same label, on the
same source, overlaps it in time (half-open intervals ``[start_ns, end_ns)``). A
ground-truth event is recalled when at least one detection is a true positive on it.
Precision is true positives / detections; recall is recalled / ground-truth events.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Interval:
    """A labelled time span on one source (a detection or a ground-truth event).

    Attributes:
        label: class label.
        source: the source it belongs to (URI or any name shared by both sides).
        start_ns: start, monotonic ns.
        end_ns: end (exclusive), monotonic ns.
    """

    label: str
    source: str
    start_ns: int
    end_ns: int

    def overlaps(self, other: Interval) -> bool:
        """True when both share a source and their spans intersect."""
        return self.source == other.source and self.start_ns < other.end_ns and other.start_ns < self.end_ns


@dataclass(frozen=True)
class ClassScore:
    """Counts and rates of one class (or of every class together).

    Attributes:
        label: class label, ``"overall"`` for the total.
        detections: detections with this label.
        true_positives: those overlapping a ground-truth event of the label.
        truth: ground-truth events with this label.
        recalled: those hit by at least one true positive.
    """

    label: str
    detections: int
    true_positives: int
    truth: int
    recalled: int

    @property
    def precision(self) -> float:
        """true_positives / detections; nan without detections."""
        return self.true_positives / self.detections if self.detections else float("nan")

    @property
    def recall(self) -> float:
        """recalled / truth; nan without ground-truth events."""
        return self.recalled / self.truth if self.truth else float("nan")

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall; 0 when either is 0 or undefined."""
        p, r = self.precision, self.recall
        return 0.0 if math.isnan(p) or math.isnan(r) or p + r == 0 else 2 * p * r / (p + r)


@dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes:
        per_class: one score per label seen on either side, sorted by label.
        overall: totals over every class.
        hit: per detection (input order), whether it is a true positive.
        found: per scored ground-truth event (input order), whether it was recalled.
        unscored: labels of ground-truth events left out because no prompt has them.
    """

    per_class: tuple[ClassScore, ...]
    overall: ClassScore
    hit: tuple[bool, ...]
    found: tuple[bool, ...]
    unscored: tuple[str, ...]


def evaluate(
    detections: Sequence[Interval], truth: Sequence[Interval], labels: Iterable[str] | None = None
) -> Evaluation:
    """Match detections to ground truth.

    Args:
        detections: detected events, any order.
        truth: ground-truth events, any order.
        labels: the labels the detector can emit (its prompts); ground-truth events of
            other labels are left out of recall (listed in ``unscored``). None scores all.
    """
    allowed = None if labels is None else set(labels)
    scored = [t for t in truth if allowed is None or t.label in allowed]
    unscored = tuple(sorted({t.label for t in truth} - {t.label for t in scored}))
    hit = tuple(any(d.label == t.label and d.overlaps(t) for t in scored) for d in detections)
    found = tuple(any(d.label == t.label and d.overlaps(t) for d in detections) for t in scored)
    per_class = []
    for label in sorted({d.label for d in detections} | {t.label for t in scored}):
        per_class.append(
            ClassScore(
                label,
                detections=sum(1 for d in detections if d.label == label),
                true_positives=sum(1 for d, h in zip(detections, hit, strict=True) if h and d.label == label),
                truth=sum(1 for t in scored if t.label == label),
                recalled=sum(1 for t, f in zip(scored, found, strict=True) if f and t.label == label),
            )
        )
    overall = ClassScore("overall", len(detections), sum(hit), len(scored), sum(found))
    return Evaluation(tuple(per_class), overall, hit, found, unscored)


def truth_from_timeline(timeline: Iterable[Any], source: str, t0_ns: int) -> list[Interval]:
    """Ground-truth intervals from a sim/replay timeline.

    Args:
        timeline: events with ``label``, ``start_s``, ``end_s`` (objects such as
            ``sensors.sim_world.Event`` or dicts from a recording), seconds on the
            source's clock.
        source: the source name the detections use.
        t0_ns: host monotonic ns of the timeline's zero (the first sample).
    """
    out = []
    for e in timeline:
        get = e.get if isinstance(e, Mapping) else lambda k, e=e: getattr(e, k)
        start_ns = t0_ns + round(float(get("start_s")) * 1e9)
        out.append(Interval(str(get("label")), source, start_ns, t0_ns + round(float(get("end_s")) * 1e9)))
    return out


def format_table(result: Evaluation) -> list[str]:
    """Text lines: one per class then the overall line (precision/recall as fractions)."""

    def cell(x: float) -> str:
        return "  -  " if math.isnan(x) else f"{x:5.2f}"

    lines = [f"{'class':<14} {'det':>4} {'tp':>4} {'truth':>5} {'found':>5}  {'prec':>5}  {'recall':>6}"]
    for s in (*result.per_class, result.overall):
        lines.append(
            f"{s.label:<14} {s.detections:>4} {s.true_positives:>4} {s.truth:>5} {s.recalled:>5}"
            f"  {cell(s.precision)}  {cell(s.recall):>6}"
        )
    return lines
