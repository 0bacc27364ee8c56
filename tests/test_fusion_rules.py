"""Per-rule thresholds, provenance keys, the per-class rule choice of runtime/fusion_eval.py, and the tuned
demo config bundles/demo/fusion.json (parses, one rule per demo class, detects each class it is fed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import ConfigError
from runtime.evaluate import Interval
from runtime.fusion import Fuser, FusionConfig, FusionRule
from runtime.fusion_eval import SOURCE, Track, choose_rules
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
    # overall F1 drops (0.67 -> 0.5); thresholds=() leaves that switch as the only candidate
    tracks, truth = _tracks(imu_during_alarm=0.6)
    single_f1 = {"imu": {"running": 0.8}, "audio": {"running": 0.1, "alarm": 0.9}}
    cfg, choice = choose_rules(tracks, truth, ("running", "alarm"), CONFIG, single_f1, thresholds=())
    assert choice["running"] == "fused" and cfg == CONFIG
    tracks, truth = _tracks()  # without the IMU's confusion the same switch is taken
    assert choose_rules(tracks, truth, ("running", "alarm"), CONFIG, single_f1, thresholds=())[1]["running"] == "imu"


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
