"""Fusion and the embedding memory wired into ``runtime.stream`` and the daemon, with real parts.

``sim://demo`` (four streams) through the committed trained demo bundle with ONNX Runtime;
the daemon runs in this process with a list sink standing in for Zenoh/MQTT (those are
tested with real brokers in tests/test_daemon.py), its control handler called directly.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.errors import EdgebindError
from runtime.search import main as search_main
from runtime.stream import main as stream_main
from tests.sinks_support import ListSink

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bundles" / "demo"
TOKEN = "test-token-0123456789"
STREAMS = "imu,audio,depth,thermal"
S = 1_000_000_000
pytestmark = pytest.mark.skipif(not (DEMO / "manifest.json").is_file(), reason="bundles/demo is not built")

# A hand-written config over demo labels: falls need two sensors, the alarm is heard, speech is heard or seen.
FUSION = {
    "window_s": 2.0, "enter_threshold": 0.5, "exit_threshold": 0.4, "support_threshold": 0.2,
    "min_duration_s": 0.0, "cooldown_s": 1.0, "exclusive": True,
    "rules": {"fall": {"requires": ["imu", "audio", "depth", "thermal"], "min_modalities": 2},
              "alarm": {"requires": ["audio"]}, "speech": {"requires": ["audio", "depth", "thermal"]}},
}  # fmt: skip


def fusion_file(tmp: Path) -> Path:
    path = tmp / "fusion.json"
    path.write_text(json.dumps(FUSION))
    return path


def truth(duration_s: float) -> list[Any]:
    from sensors.sim import generate

    return list(generate("demo", seed=0, duration_s=duration_s, streams=("imu",)).timeline)


def test_stream_fused_events_and_memory_then_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mem = tmp_path / "mem"
    uri = f"sim://demo?seed=0&pace=fast&streams={STREAMS}&duration_s=30"
    argv = ["--bundle", str(DEMO), "--source", uri, "--prompt-file", str(DEMO / "prompts.txt"), "--json",
            "--lossless", "--threads", "1", "--fusion", str(fusion_file(tmp_path)), "--memory", str(mem)]  # fmt: skip
    assert stream_main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    fused = [r for r in rows if r["type"] == "fused_event"]
    single = [r for r in rows if r["type"] == "event"]
    summary = rows[-1]
    assert summary["type"] == "summary" and summary["errors"] == [] and single
    assert summary["fusion"]["events"] == len(fused) > 0 and summary["fusion"]["windows"] == summary["windows"]
    assert summary["memory"]["stored"] == summary["windows"] == summary["memory"]["windows"]
    for r in fused:
        assert r["label"] in FUSION["rules"] and r["modality"] == "fused" and r["end_ns"] > r["start_ns"]
        assert set(r["modalities"]) <= set(r["per_modality"]) <= set(STREAMS.split(","))
    events = truth(30)
    hits = [r for r in fused if any(e.label == r["label"] and e.start_s - 1.5 < r["start_s"] < e.end_s + 1.5
                                    for e in events)]  # fmt: skip
    assert len(hits) >= len(fused) / 2, (fused, events)  # fused events mostly land on the right scenes
    assert {r["label"] for r in hits} >= {"fall"}  # the scripted fall (IMU impact + thud + body on the floor)

    assert search_main(["--memory", str(mem), "an alarm is ringing", "--modality", "audio", "--top", "3",
                        "--json"]) == 0  # fmt: skip
    found = json.loads(capsys.readouterr().out)
    assert found["ok"] and found["searched"] == summary["windows"] and len(found["hits"]) == 3
    assert all(h["modality"] == "audio" for h in found["hits"])

    # --fused-only: the same run prints fused events only, and appends to the same memory (ids go on)
    assert stream_main([*argv, "--fused-only", "--duration", "5"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["type"] for r in rows} <= {"fused_event", "summary"} and rows[-1]["events"] >= 0
    assert rows[-1]["memory"]["windows"] == summary["windows"] + rows[-1]["memory"]["stored"]


def test_stream_rejects_bad_multimodal_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--bundle", str(DEMO), "--source", "sim://demo", "--prompt-file", str(DEMO / "prompts.txt")]
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"rules": {"teleport": {"requires": ["imu"]}}}))
    from runtime.memory import EmbeddingMemory

    EmbeddingMemory(tmp_path / "other", 64, meta={"model_id": "someone-else"}).close()
    cases = {
        "needs --fusion": ["--fused-only"],
        "cannot read": ["--fusion", str(tmp_path / "nope.json")],
        "'teleport' has no prompt": ["--fusion", str(wrong)],
        "need --memory": ["--memory-max-age", "7d"],
        "bad duration": ["--memory", str(tmp_path / "m"), "--memory-max-age", "soon"],
        "recorded with model someone-e": ["--memory", str(tmp_path / "other")],
        "cannot create or open it (Not a directory)": ["--memory", str(tmp_path / "wrong.json" / "memory")],
    }
    for expect, extra in cases.items():
        assert stream_main([*base, *extra, "--duration", "1"]) == 2, expect
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expect in err and len(err.strip().splitlines()) == 1, (expect, err)


def audio_clip(tmp: Path, label: str) -> Path:
    """A WAV of the sim's ``label`` scene (another seed than the stream's)."""
    from sensors.sim import generate

    rec = generate("demo", seed=5, duration_s=60, streams=("audio",))
    event = next(e for e in rec.timeline if e.label == label)
    rate = 16000
    seg = np.asarray(rec.streams["audio"].values, np.float32).reshape(-1)
    seg = seg[int(event.start_s * rate) : int(event.end_s * rate)]
    path = tmp / f"{label}.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(seg, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def test_daemon_publishes_fused_events_records_memory_and_answers_search(tmp_path: Path) -> None:
    from runtime.daemon import Daemon
    from runtime.daemon_config import load_config

    uri = f"sim://demo?seed=0&pace=fast&streams={STREAMS}&duration_s=30"
    clip = audio_clip(tmp_path, "door_knock")
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(f"""[bundle]\npath = "{DEMO}"\nthreads = 1\n[[sources]]\nuri = "{uri}"\n
[prompts]\nfile = "{DEMO / 'prompts.txt'}"\n[event_log]\npath = "ev.db"\n[http]\nenabled = false\n
[control]\nenabled = true\n[listsink]\nenabled = true\n[pipeline]\nlossless = true\n
[fusion]\nenabled = true\nfile = "{fusion_file(tmp_path)}"\npublish_single = false\n
[memory]\nenabled = true\npath = "memory"\nmax_windows = 100000\nmax_age = "7d"\n""")
    cfg = load_config(cfg_path, extra_sinks=("listsink",), environ={"EDGEBIND_TOKEN": TOKEN})
    assert cfg.memory.max_age_s == 7 * 86400 and cfg.memory.path == tmp_path / "memory"
    daemon = Daemon(cfg, {"listsink": ListSink})
    daemon.start()
    try:
        assert daemon.pipeline is not None and daemon.pipeline.wait(240), "30 s of sim data not processed"
        control = daemon.control
        reply = control.handle({"op": "memory.search", "query": "an alarm is ringing", "modality": "audio",
                                "top": 2, "id": 7})  # fmt: skip
        assert reply["ok"] and reply["id"] == 7 and len(reply["hits"]) == 2 and reply["searched"] > 500
        arith = control.handle({"op": "memory.search", "query": '"an alarm is ringing" - "a person talking"'})
        assert arith["ok"] and arith["hits"]
        example = {"op": "memory.search", "query": f"@audio:{clip}", "modality": "audio", "top": 3}
        refused = control.handle(example)
        assert refused["ok"] is False and "token" in refused["error"]
        assert control.handle({**example, "token": "wrong"})["ok"] is False
        answer = control.handle({**example, "token": TOKEN})
        assert answer["ok"] and len(answer["hits"]) == 3
        knock = next(e for e in truth(30) if e.label == "door_knock")  # the example finds the stream's own knock
        t0 = daemon.pipeline.created_ns
        assert any(knock.start_s - 2 < (h["start_mono_ns"] - t0) / S < knock.end_s for h in answer["hits"])
        assert control.handle({"op": "memory.search", "query": "x", "top": 0})["ok"] is False
        bad_prompts = control.handle({"op": "prompts.set", "prompts": ["alarm: an alarm", "speech: talking"],
                                      "token": TOKEN})  # fmt: skip
        assert bad_prompts["ok"] is False and "'fall' has no prompt" in bad_prompts["error"]
        status = control.handle({"op": "status"})["status"]
        assert status["fusion"]["events"] > 0 and status["memory"]["windows"] == status["pipeline"]["windows"]
        assert status["counters"]["events_single_not_published"] > 0
        assert status["prompts"]["origin"] == "config"  # the rejected prompts did not replace the bank
    finally:
        assert daemon.shutdown() == 0
    assert ListSink.last is not None
    published = ListSink.last.events
    assert published and {e["type"] for e in published} == {"fused_event"}
    assert {e["label"] for e in published} <= set(FUSION["rules"]) and all(e["daemon"] for e in published)


def test_daemon_config_rejects_bad_multimodal_tables(tmp_path: Path) -> None:
    from runtime.daemon_config import ConfigProblems, load_config

    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(f"""[bundle]\npath = "{DEMO}"\n[[sources]]\nuri = "sim://demo"\n
[prompts]\nfile = "{DEMO / 'prompts.txt'}"\n[event_log]\npath = "ev.db"\n
[fusion]\nenabled = true\npublish_singel = true\n[memory]\nenabled = true\nmax_age = "soon"\nmax_windows = 0\n""")
    with pytest.raises(ConfigProblems) as err:
        load_config(cfg_path)
    lines = err.value.lines
    assert any(x.startswith("fusion.publish_singel: unknown key") for x in lines), lines
    assert any(x.startswith("fusion.file: missing") for x in lines), lines
    assert any(x.startswith("memory.max_age: expected a duration") for x in lines), lines
    assert any(x.startswith("memory.max_windows: expected an integer >= 1") for x in lines), lines
    assert any(x.startswith("memory.path: missing") for x in lines), lines
    assert isinstance(err.value, EdgebindError)


def test_fused_events_and_memory_search_over_real_mqtt_and_zenoh(tmp_path: Path) -> None:
    """The daemon with a real mosquitto and a Zenoh listener on loopback: fused events arrive on
    ``<prefix>/events/fused/<label>``; ``memory.search`` is answered over both control channels."""
    pytest.importorskip("zenoh", reason="eclipse-zenoh is not installed")
    pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed")
    from runtime.daemon import Daemon
    from runtime.daemon_config import load_config
    from tests.sinks_support import MOSQUITTO, MqttCollector, free_port, running_broker, zenoh_client, zenoh_get

    if MOSQUITTO is None:
        pytest.skip("mosquitto binary absent (apt-get install mosquitto)")
    uri = f"sim://demo?seed=0&pace=fast&streams={STREAMS}&duration_s=30"
    zport, prefix = free_port(), "edgebind/mm"
    search = {"op": "memory.search", "query": "an alarm is ringing", "modality": "audio", "top": 2}
    with running_broker(tmp_path, shared=False) as (host, mport):
        cfg_path = tmp_path / "cfg.toml"
        cfg_path.write_text(f"""[bundle]\npath = "{DEMO}"\nthreads = 1\n[[sources]]\nuri = "{uri}"\n
[prompts]\nfile = "{DEMO / 'prompts.txt'}"\n[event_log]\npath = "ev.db"\n[http]\nenabled = false\n
[control]\nenabled = true\n[pipeline]\nlossless = true\n
[fusion]\nenabled = true\nfile = "{fusion_file(tmp_path)}"\npublish_single = false\n
[memory]\nenabled = true\npath = "memory"\n
[mqtt]\nenabled = true\nhost = "{host}"\nport = {mport}\ntopic_prefix = "{prefix}"\n
[zenoh]\nenabled = true\nlisten = ["tcp/127.0.0.1:{zport}"]\nkey_prefix = "{prefix}"\n""")
        events = MqttCollector(host, mport, f"{prefix}/events/#")
        replies = MqttCollector(host, mport, f"{prefix}/control/reply")
        daemon = Daemon(load_config(cfg_path, environ={"EDGEBIND_TOKEN": TOKEN}))
        daemon.start()
        session = None
        try:
            assert daemon.pipeline is not None and daemon.pipeline.wait(240)
            reply = _mqtt_request(replies, f"{prefix}/control/request", {**search, "id": 41})
            assert reply["ok"] and reply["id"] == 41 and len(reply["hits"]) == 2
            assert all(h["modality"] == "audio" for h in reply["hits"])
            session = zenoh_client(zport)
            got = zenoh_get(session, f"{prefix}/control", json.dumps(search).encode(), timeout=10)
            assert got and got[0][1]["ok"] and [h["id"] for h in got[0][1]["hits"]] == [h["id"] for h in reply["hits"]]
            fused = _drain(events, until=lambda got: len(got) >= 1)
            assert fused and all(topic.startswith(f"{prefix}/events/fused/") for topic, _ in fused)
            assert all(e["type"] == "fused_event" and e["label"] in FUSION["rules"] for _, e in fused)
        finally:
            if session is not None:
                session.close()
            assert daemon.shutdown() == 0
            events.close()
            replies.close()


def _mqtt_request(replies: Any, topic: str, request: dict[str, Any], timeout_s: float = 60.0) -> dict[str, Any]:
    """Publish ``request`` until its reply (same id) arrives: the sink subscribes once it has connected."""
    import queue
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        replies.publish(topic, json.dumps(request).encode())
        try:
            while True:
                _, body = replies.get_json(timeout=1.0)
                if body.get("id") == request["id"]:
                    return body
        except queue.Empty:
            continue
    raise AssertionError(f"no reply to {request} on {topic} within {timeout_s} s")


def _drain(collector: Any, until: Any, timeout_s: float = 30.0) -> list[tuple[str, dict[str, Any]]]:
    """Messages received by ``collector`` until ``until(messages)`` holds or the time is up."""
    import queue
    import time

    got: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got.append(collector.get_json(timeout=0.5))
        except queue.Empty:
            if until(got):
                return got
    return got
