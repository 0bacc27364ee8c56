"""Matcher: cosine/softmax scores, hysteresis, minimum duration, cooldown, thresholds, background."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from runtime.errors import ConfigError
from runtime.matching import MatchConfig, Matcher
from runtime.prompts import Prompt, PromptBank
from runtime.types import Match, Modality

S = 1_000_000_000  # ns per second
HOP_NS = S // 2
WINDOW_NS = 2 * S
A = Modality.AUDIO


def make_bank(*prompts: Prompt) -> PromptBank:
    """Prompt i's vector is the basis vector e_i in D = P + 1 (the last axis pads windows to unit norm)."""
    return PromptBank(prompts, np.eye(len(prompts), len(prompts) + 1, dtype=np.float32), "test-model")


def window(cosines: Sequence[float]) -> NDArray[np.float32]:
    """A (D,) unit vector whose cosine with prompt i is cosines[i]."""
    rest = 1.0 - sum(c * c for c in cosines)
    assert rest >= 0
    return np.array([*cosines, math.sqrt(rest)], dtype=np.float32)


def feed(matcher: Matcher, rows: Sequence[Sequence[float]], stream: str = "mic", first: int = 0) -> list[list[Match]]:
    """Feed windows (hop 0.5 s, length 2 s) starting at window index ``first``; the opens per window."""
    out = []
    for i, row in enumerate(rows, start=first):
        out.append(matcher.update(stream, A, i * HOP_NS, i * HOP_NS + WINDOW_NS, window(row)))
    return out


def config(**kw: object) -> MatchConfig:
    base: dict[str, object] = {"cooldown_s": 0.0}
    base.update(kw)
    return MatchConfig.from_dict(base)


BANK2 = make_bank(Prompt("glass", ("glass breaking",)), Prompt("dog", ("a dog",)))


def test_config_round_trip_and_validation() -> None:
    cfg = MatchConfig(scoring="softmax", enter_threshold=0.5, exit_threshold=0.4, top_k=2)
    assert MatchConfig.from_dict(cfg.to_dict()) == cfg
    for bad, what in [
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"scoring": "dot"}, "scoring 'dot'"),
        ({"exit_threshold": 0.3}, "exit_threshold 0.3 must be <="),
        ({"top_k": 0}, "top_k 0"),
        ({"top_k": 1.5}, "expected an integer"),
        ({"cooldown_s": -1}, "cooldown_s -1.0 must be >= 0"),
        ({"logit_scale": 0}, "logit_scale"),
        ({"min_duration_s": float("nan")}, "finite"),
        ({"enter_threshold": "high"}, "expected a number"),
    ]:
        with pytest.raises(ConfigError, match=what):
            MatchConfig.from_dict(bad)


def test_cosine_scores_and_margin() -> None:
    matcher = Matcher(BANK2, config(enter_threshold=0.25, exit_threshold=0.2))
    (opened,) = feed(matcher, [[0.6, 0.2]])[0]
    assert opened.label == "glass" and opened.modality is A and opened.source_id == "mic"
    assert opened.score == pytest.approx(0.6, abs=1e-6)
    assert opened.margin == pytest.approx(0.4, abs=1e-6)
    assert (opened.start_ns, opened.end_ns) == (0, WINDOW_NS)
    top = matcher.top("mic")
    assert [label for label, _ in top] == ["glass", "dog"]
    assert [s for _, s in top] == pytest.approx([0.6, 0.2], abs=1e-6)


def test_softmax_scores_include_background() -> None:
    bank = make_bank(Prompt("glass", ("g",)), Prompt("dog", ("d",)), Prompt("bg", ("b",), background=True))
    cfg = config(scoring="softmax", logit_scale=10.0, enter_threshold=0.5, exit_threshold=0.4)
    cos = np.array([0.3, 0.1, 0.2])
    expect = np.exp(10 * cos) / np.exp(10 * cos).sum()
    matcher = Matcher(bank, cfg)
    (opened,) = feed(matcher, [cos.tolist()])[0]
    assert opened.score == pytest.approx(expect[0], rel=1e-5)
    assert opened.margin == pytest.approx(expect[0] - expect[2], rel=1e-5)
    assert dict(matcher.top("mic")) == pytest.approx(dict(zip(bank.labels, expect, strict=True)), rel=1e-5)
    # the same cosines open nothing when the softmax probability is under the threshold
    assert feed(Matcher(bank, config(scoring="softmax", logit_scale=1.0, enter_threshold=0.5,
                                     exit_threshold=0.4)), [cos.tolist()]) == [[]]  # fmt: skip


def test_hysteresis_one_event_closing_below_exit() -> None:
    matcher = Matcher(BANK2, config(enter_threshold=0.25, exit_threshold=0.2))
    opens = feed(matcher, [[0.3, 0.0], [0.22, 0.0], [0.18, 0.0], [0.22, 0.0]])
    assert [len(o) for o in opens] == [1, 0, 0, 0]
    (closed,) = matcher.closed()
    assert closed.label == "glass"
    assert (closed.start_ns, closed.end_ns) == (0, HOP_NS + WINDOW_NS)  # ends with the 0.22 window
    assert closed.score == pytest.approx(0.3, abs=1e-6)
    assert matcher.closed() == []
    # 0.22 after the close is under enter: no new event until 0.25 again
    assert [m.label for o in feed(matcher, [[0.26, 0.0]], first=4) for m in o] == ["glass"]


def test_min_duration_needs_consecutive_windows() -> None:
    matcher = Matcher(BANK2, config(min_duration_s=1.0))  # 1 s = 2 hops -> 3 windows
    opens = feed(matcher, [[0.3, 0], [0.3, 0], [0.1, 0], [0.3, 0], [0.4, 0], [0.3, 0], [0.3, 0]])
    assert [len(o) for o in opens] == [0, 0, 0, 0, 0, 1, 0]
    (event,) = opens[5]
    assert (event.start_ns, event.end_ns) == (3 * HOP_NS, 5 * HOP_NS + WINDOW_NS)
    assert event.score == pytest.approx(0.4, abs=1e-6)
    assert matcher.closed() == []  # the broken run at window 0-1 was never an event


def test_cooldown_suppresses_then_allows() -> None:
    matcher = Matcher(BANK2, config(cooldown_s=2.0))
    opens = feed(matcher, [[0.3, 0]] + [[0.0, 0]] + [[0.3, 0]] * 5)
    # event ends at 2 s (window 0); re-open needs a window ending >= 4 s: window 4 (2 s..4 s)
    assert [len(o) for o in opens] == [1, 0, 0, 0, 1, 0, 0]
    assert opens[4][0].start_ns == 4 * HOP_NS
    no_cooldown = Matcher(BANK2, config(cooldown_s=0.0))
    assert [len(o) for o in feed(no_cooldown, [[0.3, 0], [0.0, 0], [0.3, 0]])] == [1, 0, 1]


def test_per_prompt_threshold_shifts_enter_and_exit() -> None:
    bank = make_bank(Prompt("glass", ("g",), threshold=0.5), Prompt("dog", ("d",), threshold=0.1))
    matcher = Matcher(bank, config(enter_threshold=0.25, exit_threshold=0.2))
    assert feed(matcher, [[0.4, 0.0]]) == [[]]  # 0.4 < glass's 0.5
    (opened,) = feed(matcher, [[0.0, 0.12]], first=1)[0]
    assert opened.label == "dog"  # 0.12 >= dog's 0.1 (global 0.25 would refuse)
    feed(matcher, [[0.0, 0.06]], first=2)  # dog's exit is 0.1 - 0.05 = 0.05: stays open
    assert matcher.closed() == []
    feed(matcher, [[0.0, 0.04]], first=3)
    assert [m.label for m in matcher.closed()] == ["dog"]
    assert [m.label for o in feed(matcher, [[0.55, 0.0]], first=4) for m in o] == ["glass"]


def test_background_prevents_detection_but_does_not_close() -> None:
    bank = make_bank(Prompt("glass", ("g",)), Prompt("bg", ("b",), background=True))
    matcher = Matcher(bank, config())
    assert feed(matcher, [[0.4, 0.5]]) == [[]]  # background wins: no open
    assert matcher.top("mic")[0][0] == "bg"
    (opened,) = feed(matcher, [[0.5, 0.4]], first=1)[0]
    assert opened.label == "glass"
    assert opened.margin == pytest.approx(0.1, abs=1e-6)
    feed(matcher, [[0.3, 0.6]], first=2)  # background wins, glass still >= exit: stays open
    assert matcher.closed() == []
    feed(matcher, [[0.1, 0.6]], first=3)
    assert [m.label for m in matcher.closed()] == ["glass"]
    only_bg = Matcher(make_bank(Prompt("bg", ("b",), background=True)), config())
    assert feed(only_bg, [[0.9]]) == [[]]


def test_only_best_label_opens_and_margin_min() -> None:
    matcher = Matcher(BANK2, config(margin_min=0.1))
    assert feed(matcher, [[0.35, 0.3]]) == [[]]  # both over enter, margin 0.05 < 0.1
    opens = feed(matcher, [[0.3, 0.45]], first=1)
    assert [m.label for o in opens for m in o] == ["dog"]  # only the best opens, not glass too
    assert opens[0][0].margin == pytest.approx(0.15, abs=1e-6)


def test_top_k_ordering() -> None:
    bank = make_bank(*(Prompt(f"p{i}", (f"t{i}",)) for i in range(5)))
    matcher = Matcher(bank, config(top_k=3, enter_threshold=0.9, exit_threshold=0.9))
    assert matcher.top("mic") == []
    feed(matcher, [[0.1, 0.4, -0.2, 0.3, 0.35]])
    top = matcher.top("mic")
    assert [label for label, _ in top] == ["p1", "p4", "p3"]
    assert [s for _, s in top] == pytest.approx([0.4, 0.35, 0.3], abs=1e-6)


def test_streams_are_independent() -> None:
    matcher = Matcher(BANK2, config(min_duration_s=0.5))
    assert feed(matcher, [[0.3, 0]], stream="a") == [[]]
    assert feed(matcher, [[0.0, 0.3]], stream="b") == [[]]  # b's windows don't break a's run
    (event,) = feed(matcher, [[0.3, 0]], stream="a", first=1)[0]
    assert (event.source_id, event.label, event.start_ns) == ("a", "glass", 0)
    (event_b,) = feed(matcher, [[0.0, 0.3]], stream="b", first=1)[0]
    assert (event_b.source_id, event_b.label) == ("b", "dog")
    feed(matcher, [[0.0, 0.0]], stream="a", first=2)
    assert [(m.source_id, m.label) for m in matcher.closed()] == [("a", "glass")]
    assert matcher.top("b")[0][0] == "dog" and matcher.top("a")[0][1] == pytest.approx(0.0, abs=1e-6)


def test_swap_bank_resets_removed_labels() -> None:
    matcher = Matcher(BANK2, config())
    feed(matcher, [[0.0, 0.3]])  # dog opens
    feed(matcher, [[0.3, 0.2]], first=1)  # glass is best but dog still open
    new = make_bank(Prompt("glass", ("glass breaking",)), Prompt("cat", ("a cat",)))
    matcher.swap_bank(new)
    assert matcher.bank is new
    assert [m.label for m in matcher.closed()] == ["dog"]  # dog's open event closed on removal
    assert [label for label, _ in matcher.top("mic")] == ["glass"]
    opens = feed(matcher, [[0.1, 0.4]], first=2)
    assert [m.label for o in opens for m in o] == ["cat"]


def test_flush_closes_open_events() -> None:
    matcher = Matcher(BANK2, config())
    feed(matcher, [[0.3, 0.0]], stream="a")
    feed(matcher, [[0.0, 0.3]], stream="b")
    matcher.flush("a")
    assert [m.source_id for m in matcher.closed()] == ["a"]
    matcher.flush()
    assert [m.source_id for m in matcher.closed()] == ["b"]
