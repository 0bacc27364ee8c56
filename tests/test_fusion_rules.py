"""Per-rule thresholds and ``exclusive``, provenance keys, the per-class rule choice and ``concat_sets`` of
runtime/fusion_eval.py, and the tuned demo config bundles/demo/fusion.json (parses, one rule per demo class,
detects each class it is fed)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import ConfigError
from runtime.evaluate import Interval, evaluate
from runtime.fusion import Fuser, FusionConfig, FusionRule
from runtime.fusion_eval import SOURCE, Track, concat_sets, fused_detections
from runtime.fusion_tuning import choose_rules
from runtime.prompts import load_prompt_file

S = 1_000_000_000  # ns per second
DEMO = Path(__file__).resolve().parents[1] / "bundles" / "demo"
LABELS = ("running", "alarm", "quiet")


def test_a_rule_threshold_overrides_the_configs() -> None:
    rules = (FusionRule("fall", ("audio",), {}, 1, 0.3, 0.2),)
    cfg = FusionConfig(rules, calibration="cosine", window_s=0.5, enter_threshold=0.6, exit_threshold=0.5)
    assert cfg.thresholds(rules[0]) == (0.3, 0.2)
    fuser = Fuser(cfg)
    onsets = [fuser.update(round(t * S), "audio", {"fall": x}) for t, x in ((0, 0.35), (1, 0.25), (2, 0.15))]
    assert [len(o) for o in onsets] == [1, 0, 0]  # 0.35 >= 0.3 opens (the config's 0.6 would not)
    (event,) = fuser.closed()
    assert (event.start_ns, event.end_ns) == (0, 1 * S)  # 0.25 >= exit 0.2 kept it open; 0.15 closed it
    assert cfg.thresholds(FusionRule("fall", ("audio",))) == (0.6, 0.5)
    # a rule's exit left out is the config's, capped at the rule's enter
    assert cfg.thresholds(FusionRule("fall", ("audio",), enter_threshold=0.3)) == (0.3, 0.3)
    assert cfg.thresholds(FusionRule("fall", ("audio",), enter_threshold=0.8)) == (0.8, 0.5)
    assert cfg.thresholds(FusionRule("fall", ("audio",), exit_threshold=0.1)) == (0.6, 0.1)


def test_rule_threshold_round_trips_and_provenance_keys_are_ignored() -> None:
    cfg = FusionConfig(
        (FusionRule("fall", ("imu", "audio"), {"imu": 2.0}, 2), FusionRule("run", ("imu",), {}, 1, 0.35))
    )
    data = cfg.to_dict()
    assert "enter_threshold" not in data["rules"]["fall"] and data["rules"]["run"]["enter_threshold"] == 0.35
    assert FusionConfig.from_dict(data) == cfg
    data["_about"] = {"benchmark": "benchmarks/fusion.py", "held_out_f1": 0.8}
    data["rules"]["fall"]["_note"] = "tuned"
    assert FusionConfig.from_dict(json.loads(json.dumps(data))) == cfg


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ({"enter_threshold": "0.3"}, "fusion rule 'run': enter_threshold = '0.3' must be a finite number"),
        ({"enter_threshold": True}, "fusion rule 'run': enter_threshold = True must be a finite number"),
        ({"exit_threshold": math.nan}, "fusion rule 'run': exit_threshold = nan must be a finite number"),
        ({"enter_threshold": math.inf}, "fusion rule 'run': enter_threshold = inf must be a finite number"),
        ({"enter_threshold": 0.2, "exit_threshold": 0.3}, "fusion rule 'run': exit_threshold 0.3 must be <= "
                                                          "enter_threshold 0.2"),
        ({"exit_threshold": 0.7}, "rule 'run': exit_threshold 0.7 must be <= its enter_threshold 0.4"),
        ({"enter_treshold": 0.3}, "rules.run: unknown key 'enter_treshold'"),
    ],
)  # fmt: skip
def test_bad_rule_thresholds_are_one_line_errors_naming_the_rule(rule: dict, needle: str) -> None:
    data = {"rules": {"run": {"requires": ["imu"], **rule}}}
    with pytest.raises(ConfigError) as info:
        FusionConfig.from_dict(data, where="robot.toml [fusion]")
    message = str(info.value)
    assert message.startswith("robot.toml [fusion]: ") and needle in message and "\n" not in message, message


RUNNING_S, ALARM_S, NOISE_S = (5, 35, 65), (20, 50, 80), (12, 42, 72)  # 5 s each


def _tracks(
    imu_running: float = 0.5, audio_noise: float = 0.0, imu_during_alarm: float = 0.0
) -> tuple[dict[str, Track], list[Interval]]:
    """90 s at 2 Hz, cosines with (running, alarm, quiet): three runs that only the IMU shows (``imu_running``),
    three alarms that audio shows; audio reports ``audio_noise`` for running at three other times, and from 1 s
    before each alarm to its end the IMU reports ``imu_during_alarm`` for running."""
    t = np.arange(0, 90, 0.5)
    imu = np.zeros((t.size, 3), np.float32)
    imu[:, 2] = 0.5  # quiet
    audio = imu.copy()
    for a in RUNNING_S:
        imu[(a <= t) & (t < a + 5)] = (imu_running, 0.0, 0.0)
    for a in NOISE_S:
        if audio_noise:
            audio[(a <= t) & (t < a + 5)] = (audio_noise, 0.0, 0.0)
    for a in ALARM_S:
        audio[(a <= t) & (t < a + 5)] = (0.0, 0.5, 0.0)
        if imu_during_alarm:
            imu[(a - 1 <= t) & (t < a + 5)] = (imu_during_alarm, 0.0, 0.0)
    ns = np.round(t * S).astype(np.int64)
    tracks = {m: Track(m, ns, ns + S // 2, ns, np.zeros((t.size, 1), np.float32), c, LABELS)
              for m, c in (("imu", imu), ("audio", audio))}  # fmt: skip
    truth = [Interval("running", SOURCE, a * S, (a + 5) * S) for a in RUNNING_S]
    truth += [Interval("alarm", SOURCE, a * S, (a + 5) * S) for a in ALARM_S]
    return tracks, truth


CONFIG = FusionConfig((FusionRule("running", ("imu", "audio"), {}, 1), FusionRule("alarm", ("audio",), {}, 1)),
                      window_s=2.0, support_threshold=0.2, enter_threshold=0.6, exit_threshold=0.5)  # fmt: skip


def test_a_class_only_one_sensor_shows_switches_to_that_sensors_rule() -> None:
    # fused mean during runs (p_imu 0.99 + p_audio 0.01) / 2 = 0.5 < 0.6; audio's false "running" gives the same
    # 0.5, so no threshold of the fused rule separates them (best class F1 0.67); the IMU alone does (1.0)
    tracks, truth = _tracks(audio_noise=0.5)
    single_f1 = {"imu": {"running": 0.8}, "audio": {"running": 0.1, "alarm": 0.9}}
    cfg, choice = choose_rules(tracks, truth, ("running", "alarm"), CONFIG, single_f1)
    assert choice == {"running": "imu", "alarm": "fused"}
    assert cfg.rules[0] == FusionRule("running", ("imu",)) and cfg.rules[1] == CONFIG.rules[1]


def test_the_single_modality_candidate_is_the_best_one_by_its_tuned_f1() -> None:
    tracks, truth = _tracks(audio_noise=0.5)
    # the tuning F1 names audio as running's best sensor: audio alone finds only the false runs, so the fused
    # rule with its own threshold (class F1 0.67) is the best candidate
    single_f1 = {"imu": {"running": 0.1}, "audio": {"running": 0.5, "alarm": 0.9}}
    cfg, choice = choose_rules(tracks, truth, ("running", "alarm"), CONFIG, single_f1)
    assert choice == {"running": "fused, enter 0.1", "alarm": "fused"}
    assert cfg.rules[0].requires == ("imu", "audio")


def test_a_switch_that_costs_other_classes_more_than_it_gains_is_refused() -> None:
    # the IMU also reports running (higher than audio's alarm) from just before every alarm: an IMU-only running
    # rule finds the runs (class F1 0 -> 0.67) but wins the exclusive competition, so alarm is never found and the
    # overall F1 drops (0.67 -> 0.5); thresholds=() and non_exclusive=False leave that switch as the only candidate
    tracks, truth = _tracks(imu_during_alarm=0.6)
    single_f1 = {"imu": {"running": 0.8}, "audio": {"running": 0.1, "alarm": 0.9}}
    kw = {"thresholds": (), "non_exclusive": False}
    cfg, choice = choose_rules(tracks, truth, ("running", "alarm"), CONFIG, single_f1, **kw)
    assert choice["running"] == "fused" and cfg == CONFIG
    # outside the competition the IMU rule finds the runs without suppressing the alarms
    assert choose_rules(tracks, truth, ("running", "alarm"), CONFIG, single_f1, thresholds=())[1] == {
        "running": "imu, not exclusive",
        "alarm": "fused",
    }
    tracks, truth = _tracks()  # without the IMU's confusion the same switch is taken
    assert choose_rules(tracks, truth, ("running", "alarm"), CONFIG, single_f1, **kw)[1]["running"] == "imu"


def test_a_class_with_too_few_tuning_events_keeps_its_rule() -> None:
    tracks, truth = _tracks(audio_noise=0.5)  # as in the switch test above, but three runs are not enough here
    single_f1 = {"imu": {"running": 0.8}, "audio": {"running": 0.1, "alarm": 0.9}}
    cfg, choice = choose_rules(tracks, truth, ("running", "alarm"), CONFIG, single_f1, min_events=4)
    assert choice == {"running": "fused", "alarm": "fused"} and cfg == CONFIG


def test_a_class_can_get_its_own_threshold_on_its_fused_rule() -> None:
    # running is shown weakly by both sensors: the fused mean 0.45 stays below the config's 0.6 but clears 0.4
    tracks, truth = _tracks(imu_running=0.0)
    for track in tracks.values():
        for a in RUNNING_S:
            inside = (a * S <= track.time_ns) & (track.time_ns < (a + 5) * S)
            track.cosine[inside] = (0.35, 0.0, 0.35)  # softmax: running 0.45, quiet 0.45
    single_f1 = {"imu": {"running": 0.5}, "audio": {"running": 0.4, "alarm": 0.9}}
    cfg, choice = choose_rules(tracks, truth, ("running", "alarm"), CONFIG, single_f1)
    assert choice["running"] == "fused, enter 0.1"  # the first (lowest) of the tied thresholds 0.1-0.4
    assert cfg.rules[0].requires == ("imu", "audio") and cfg.thresholds(cfg.rules[0]) == (0.1, pytest.approx(0.0833))


def test_the_tuned_demo_config_loads_and_detects_every_demo_class() -> None:
    path = DEMO / "fusion.json"
    config = FusionConfig.from_dict(json.loads(path.read_text()), where=str(path))
    prompts = load_prompt_file(DEMO / "prompts.txt")
    classes = [p.label for p in prompts if not p.background]
    labels = [p.label for p in prompts]
    assert sorted(config.labels) == sorted(classes)
    for rule in config.rules:  # each class, fed as a clear signal on the modalities its rule requires
        fuser = Fuser(config)
        scores = {label: (0.9 if label == rule.label else 0.0) for label in labels}
        for k in range(12):
            for mod in rule.requires:
                fuser.update(k * S // 2, mod, scores)
        fuser.flush()
        assert [e.label for e in fuser.closed()] == [rule.label], rule


def test_a_non_exclusive_rule_opens_regardless_of_the_competition_and_blocks_nobody() -> None:
    rules = (FusionRule("walking", ("imu",)), FusionRule("running", ("imu",)), FusionRule("approach", ("imu",)))
    scores = {"walking": 0.6, "running": 0.7, "approach": 0.8}

    def onsets(cfg: FusionConfig) -> list[str]:
        return [e.label for e in Fuser(cfg).update(0, "imu", scores)]

    base = {"calibration": "cosine", "enter_threshold": 0.5, "exit_threshold": 0.4}
    assert onsets(FusionConfig(rules, **base)) == ["approach"]
    # running leaves the competition: it opens although approach scores higher
    out = (rules[0], replace(rules[1], exclusive=False), rules[2])
    assert onsets(FusionConfig(out, **base)) == ["running", "approach"]
    # approach leaves it: its higher score no longer blocks running, the best of those that compete
    out = (rules[0], rules[1], replace(rules[2], exclusive=False))
    assert onsets(FusionConfig(out, **base)) == ["running", "approach"]
    # under a non-exclusive config a rule can opt in: walking and running compete, approach does not
    opt_in = (replace(rules[0], exclusive=True), replace(rules[1], exclusive=True), rules[2])
    assert onsets(FusionConfig(opt_in, **base, exclusive=False)) == ["running", "approach"]


def test_rule_exclusive_round_trips_only_when_set_and_bad_values_are_one_line_errors() -> None:
    cfg = FusionConfig((FusionRule("run", ("imu",), exclusive=False), FusionRule("fall", ("imu", "audio"))))
    data = cfg.to_dict()
    assert data["rules"]["run"]["exclusive"] is False and "exclusive" not in data["rules"]["fall"]
    assert FusionConfig.from_dict(json.loads(json.dumps(data))) == cfg
    assert [cfg.is_exclusive(r) for r in cfg.rules] == [False, True]
    for bad in ("no", 1, 0.0):
        with pytest.raises(ConfigError) as info:
            FusionConfig.from_dict({"rules": {"run": {"requires": ["imu"], "exclusive": bad}}}, where="f.json")
        message = str(info.value)
        assert (
            message == f"f.json: fusion rule 'run': exclusive {bad!r} must be true or false (or left out for the "
            "config's)"
        ), message


def _confused_tracks() -> tuple[dict[str, Track], list[Interval]]:
    """90 s at 2 Hz, cosines with (running, approach, quiet): during three runs the IMU scores approach (0.6) above
    running (0.5), as the demo model does; three approaches the IMU shows clearly; audio hears quiet throughout."""
    t = np.arange(0, 90, 0.5)
    imu = np.zeros((t.size, 3), np.float32)
    imu[:, 2] = 0.5
    audio = imu.copy()
    for a in RUNNING_S:
        imu[(a <= t) & (t < a + 5)] = (0.5, 0.6, 0.0)
    for a in ALARM_S:
        imu[(a <= t) & (t < a + 5)] = (0.0, 0.5, 0.0)
    ns = np.round(t * S).astype(np.int64)
    labels = ("running", "approach", "quiet")
    tracks = {m: Track(m, ns, ns + S // 2, ns, np.zeros((t.size, 1), np.float32), c, labels)
              for m, c in (("imu", imu), ("audio", audio))}  # fmt: skip
    truth = [Interval("running", SOURCE, a * S, (a + 5) * S) for a in RUNNING_S]
    truth += [Interval("approach", SOURCE, a * S, (a + 5) * S) for a in ALARM_S]
    return tracks, truth


def test_a_class_that_never_wins_the_competition_is_chosen_outside_it() -> None:
    # p(running | imu) = 0.27 < p(approach | imu) = 0.73 during runs: no exclusive candidate can find them
    tracks, truth = _confused_tracks()
    cfg = FusionConfig((FusionRule("running", ("imu", "audio")), FusionRule("approach", ("imu",))), window_s=2.0,
                       support_threshold=0.2, enter_threshold=0.6, exit_threshold=0.5)  # fmt: skip
    single_f1 = {"imu": {"running": 0.5, "approach": 0.6}, "audio": {}}
    labels = ("running", "approach")
    before = evaluate(fused_detections(tracks, cfg), truth, labels)
    assert [s.recalled for s in before.per_class if s.label == "running"] == [0]
    chosen, choice = choose_rules(tracks, truth, labels, cfg, single_f1)
    assert choice == {"running": "fused, enter 0.1, not exclusive", "approach": "fused"}
    assert chosen.rules[0].exclusive is False and not chosen.is_exclusive(chosen.rules[0])
    after = evaluate(fused_detections(tracks, chosen), truth, labels)
    assert [s.recalled for s in after.per_class if s.label == "running"] == [3]


def test_concat_sets_joins_recordings_end_to_end_with_a_gap() -> None:
    tracks, truth = _tracks()
    joined, joined_truth = concat_sets([(tracks, truth), (tracks, truth)], gap_s=10.0)
    n = tracks["imu"].time_ns.size
    offset = 90 * S + 10 * S  # the first recording ends at 89.5 s + 0.5 s (its last window's end)
    assert joined["imu"].time_ns.size == 2 * n and joined["imu"].time_ns[n] == tracks["imu"].time_ns[0] + offset
    assert np.array_equal(joined["audio"].cosine[n:], tracks["audio"].cosine)
    assert len(joined_truth) == 2 * len(truth) and joined_truth[len(truth)].start_ns == truth[0].start_ns + offset
    with pytest.raises(ValueError, match="recording 1 has streams \\['imu'\\], the first has \\['audio', 'imu'\\]"):
        concat_sets([(tracks, truth), ({"imu": tracks["imu"]}, truth)])
