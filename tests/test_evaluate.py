"""Event scoring against ground truth (runtime.evaluate)."""

from __future__ import annotations

import math

from runtime.evaluate import Interval, evaluate, format_table, truth_from_timeline

S = 1_000_000_000


def _iv(label: str, a_s: float, b_s: float, source: str = "sim://demo") -> Interval:
    return Interval(label, source, round(a_s * S), round(b_s * S))


def test_true_positive_needs_same_label_same_source_and_overlap() -> None:
    truth = [_iv("fall", 10, 15), _iv("alarm", 20, 25)]
    dets = [
        _iv("fall", 14, 16),  # overlaps fall: TP
        _iv("fall", 15, 17),  # touches the end only (half-open): FP
        _iv("alarm", 10, 12),  # wrong time: FP
        _iv("alarm", 21, 22, source="sim://other"),  # other source: FP
        _iv("fall", 11, 12),  # second hit on the same fall: TP, recall unchanged
    ]
    r = evaluate(dets, truth)
    assert r.hit == (True, False, False, False, True)
    assert r.found == (True, False)
    by = {c.label: c for c in r.per_class}
    assert (by["fall"].detections, by["fall"].true_positives, by["fall"].truth, by["fall"].recalled) == (3, 2, 1, 1)
    assert by["fall"].precision == 2 / 3 and by["fall"].recall == 1.0
    assert by["alarm"].precision == 0.0 and by["alarm"].recall == 0.0
    assert (r.overall.precision, r.overall.recall) == (2 / 5, 1 / 2)


def test_unprompted_truth_is_left_out_and_empty_sides_give_nan() -> None:
    truth = [_iv("fall", 0, 5), _iv("engine", 5, 10)]
    r = evaluate([], truth, labels=["fall"])
    assert r.unscored == ("engine",)
    assert r.overall.truth == 1 and r.overall.recall == 0.0
    assert math.isnan(r.overall.precision)
    lines = format_table(r)
    assert lines[-1].startswith("overall") and "-" in lines[-1]


def test_truth_from_timeline_accepts_objects_and_dicts() -> None:
    class Ev:
        label, start_s, end_s = "walking", 1.5, 2.0

    got = truth_from_timeline([Ev(), {"label": "fall", "start_s": 3.0, "end_s": 4.25}], "src", 100)
    assert got == [Interval("walking", "src", 100 + 1_500_000_000, 100 + 2 * S),
                   Interval("fall", "src", 100 + 3 * S, 100 + 4_250_000_000)]  # fmt: skip
