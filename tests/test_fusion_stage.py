"""FusionStage (fusion inside a pipeline), window-hook fan-out, fusion config files, open_memory.

Unit-level with known vectors; the end-to-end runs (runtime.stream, the daemon) are in
tests/test_multimodal_runtime.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from runtime.errors import ConfigError, EdgebindError
from runtime.fusion import FusionConfig, FusionRule
from runtime.fusion_stage import FRAME_MODALITIES, FusionStage, fused_event_to_dict, load_fusion_config
from runtime.memory import EmbeddingMemory, MemoryStoreError
from runtime.prompts import Prompt, PromptBank, PromptError
from runtime.types import Modality
from runtime.window_hooks import fan_out, open_memory

S = 1_000_000_000
D = 8


def bank(labels: tuple[str, ...] = ("fall", "alarm"), background: str = "quiet") -> PromptBank:
    prompts = [Prompt(x, (x,)) for x in labels] + [Prompt(background, (background,), background=True)]
    return PromptBank(tuple(prompts), np.eye(len(prompts), D, dtype=np.float32), "model-x")


def config(rules: tuple[FusionRule, ...] | None = None, **kw: object) -> FusionConfig:
    rules = rules or (FusionRule("fall", ("imu", "audio"), min_modalities=2), FusionRule("alarm", ("audio",)))
    base = dict(window_s=2.0, enter_threshold=0.6, exit_threshold=0.5, min_duration_s=0.0, cooldown_s=0.0,
                support_threshold=0.5, logit_scale=10.0)  # fmt: skip
    return FusionConfig(rules, **{**base, **kw})  # type: ignore[arg-type]


def unit(i: int) -> np.ndarray:
    v = np.zeros(D, np.float32)
    v[i] = 1.0
    return v


def test_fall_needs_both_sensors_and_reports_scores_times_and_latency() -> None:
    got = []
    now = [100 * S]
    stage = FusionStage(config(), bank(), on_fused=got.append, clock_ns=lambda: now[0])
    stage("mic", Modality.AUDIO, 10 * S, 12 * S, unit(0))  # audio says fall; imu not seen yet: rule over audio
    assert [e.event.label for e in got] == ["fall"]  # a robot without an IMU still detects falls
    got.clear()
    stage = FusionStage(config(), bank(), on_fused=got.append, clock_ns=lambda: now[0])
    stage("imu", Modality.IMU, 5 * S, 10 * S, unit(2))  # the IMU is quiet (background)
    stage("mic", Modality.AUDIO, 10 * S, 12 * S, unit(0))  # audio alone: fall needs 2 of imu+audio
    assert got == []
    stage("imu", Modality.IMU, 8 * S, 13 * S, unit(0))  # evaluated at its centre 10.5 s: audio at 11 s not yet
    assert got == []
    stage("mic", Modality.AUDIO, 11 * S, 13 * S, unit(0))  # at 12 s: imu 10.5 s and audio within 2 s
    (fe,) = got
    assert fe.event.label == "fall" and fe.stream == "mic" and set(fe.event.modalities) == {"imu", "audio"}
    assert fe.event.start_ns == 12 * S and fe.capture_ns == 13 * S and fe.emitted_ns == now[0]
    assert fe.latency_ms == pytest.approx((100 - 13) * 1e3)
    row = fused_event_to_dict(fe, t0_ns=5 * S)
    assert row["type"] == "fused_event" and row["modality"] == "fused" and row["start_s"] == 7.0
    assert set(row["per_modality"]) == {"imu", "audio"} and row["per_modality"]["audio"] > 0.9
    assert stage.counters() == {"windows": 4, "events": 1, "by_label": {"fall": 1}}
    closed = stage.flush()
    assert [e.label for e in closed] == ["fall"] and closed[0].end_ns >= closed[0].start_ns


def test_frames_use_their_own_time() -> None:
    got = []
    assert Modality.DEPTH in FRAME_MODALITIES and Modality.AUDIO not in FRAME_MODALITIES
    rules = (FusionRule("alarm", ("thermal",)), FusionRule("fall", ("audio",)))
    stage = FusionStage(config(rules=rules), bank(), on_fused=got.append)
    stage("cam", Modality.THERMAL, 50 * S, 50 * S + S // 9, unit(1))
    assert got[0].event.start_ns == 50 * S and got[0].capture_ns <= 50 * S


def test_bank_must_keep_every_fused_label() -> None:
    with pytest.raises(PromptError, match="'alarm' has no prompt"):
        FusionStage(config(), bank(("fall", "other")))
    stage = FusionStage(config(), bank())
    with pytest.raises(PromptError, match="add the prompt or remove the rule"):
        stage.swap_bank(bank(("fall",), background="alarm"))  # a background prompt is not an event label
    stage.swap_bank(bank(("alarm", "fall", "extra")))  # order and extra labels do not matter
    stage("mic", Modality.AUDIO, 0, 2 * S, unit(0))  # scored against the new bank: "alarm" is row 0 now
    assert stage.counters()["by_label"] == {"alarm": 1}


def test_fan_out_calls_every_hook_and_reraises_the_first_error() -> None:
    seen: list[str] = []

    def ok(name: str):
        return lambda *a: seen.append(name)

    def bad(*a: object) -> None:
        seen.append("bad")
        raise ValueError("hook broke")

    assert fan_out([None, None]) is None
    single = ok("one")
    assert fan_out([None, single]) is single
    hook = fan_out([ok("a"), bad, ok("b")])
    assert hook is not None
    with pytest.raises(ValueError, match="hook broke"):
        hook("k", Modality.AUDIO, 0, 1, unit(0))
    assert seen == ["a", "bad", "b"]


def test_fusion_config_files(tmp_path: Path) -> None:
    cfg = config()
    js = tmp_path / "f.json"
    js.write_text(json.dumps(cfg.to_dict()))
    assert load_fusion_config(js) == cfg
    toml = tmp_path / "f.toml"
    toml.write_text('window_s = 3.0\nenter_threshold = 0.7\nexit_threshold = 0.6\n'
                    '[rules.fall]\nrequires = ["imu", "audio"]\nmin_modalities = 2\n')  # fmt: skip
    loaded = load_fusion_config(toml)
    assert loaded.window_s == 3.0 and loaded.rules[0].requires == ("imu", "audio")
    bad = {
        "missing.json": None,
        "syntax.json": "{not json",
        "syntax.toml": "window_s = = 3",
        "list.json": "[1, 2]",
        "norules.json": '{"window_s": 2.0}',
        "badkey.json": '{"rules": {"fall": {"requires": ["imu"]}}, "windw_s": 2}',
        "binary.json": b"\xff\xfe\x00",
    }
    for name, text in bad.items():
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        elif text is not None:
            path.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_fusion_config(path)
        msg = str(err.value)
        assert str(path) in msg and "\n" not in msg, (name, msg)


def test_open_memory_records_the_model_and_refuses_another(tmp_path: Path) -> None:
    manifest = SimpleNamespace(embed_dim=D, model_id="model-a", root=tmp_path / "bundle")
    with open_memory(tmp_path / "m", manifest, max_windows=10) as mem:  # type: ignore[arg-type]
        mem.append("s", "audio", 0, S, unit(1))
        assert mem.meta()["model_id"] == "model-a" and mem.meta()["bundle"].endswith("bundle")
    with open_memory(tmp_path / "m", manifest) as mem:  # type: ignore[arg-type]
        assert len(mem) == 1 and mem.capacity == 10
    other = SimpleNamespace(embed_dim=D, model_id="model-b", root=tmp_path)
    with pytest.raises(MemoryStoreError, match=r"recorded with model model-a.*another directory"):
        open_memory(tmp_path / "m", other)  # type: ignore[arg-type]
    with pytest.raises(EdgebindError):
        open_memory(tmp_path / "m", SimpleNamespace(embed_dim=4, model_id="model-a", root=tmp_path))  # type: ignore[arg-type]
    EmbeddingMemory(tmp_path / "n", D).close()  # a store without a model id is adopted
    with open_memory(tmp_path / "n", manifest) as mem:  # type: ignore[arg-type]
        assert mem.meta()["model_id"] == "model-a"
