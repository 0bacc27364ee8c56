"""MQTT sink against a real mosquitto on loopback: QoS 1 events, retained status and last will,
broker down/paused -> SinkError (no hang), broker back -> reconnect, control request/reply."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("paho.mqtt", reason="paho-mqtt not installed (pip install 'edgebind[daemon]')")

from runtime.sinks import SinkError, open_sink, validate_sink
from tests.sinks_support import (
    MOSQUITTO,
    TOKEN,
    Broker,
    MqttCollector,
    event,
    make_control,
    needs_mosquitto,
    running_broker,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]


def _section(host: str, port: int, prefix: str, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "host": host, "port": port, "topic_prefix": prefix, **extra}


def _prefix(name: str) -> str:
    """A topic prefix of its own per test (a shared broker keeps retained messages between tests)."""
    return f"edgebind/test/{name}-{os.getpid()}-{time.monotonic_ns()}"


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[tuple[str, int]]:
    if os.environ.get("EDGEBIND_MQTT_PORT") is None and MOSQUITTO is None:
        pytest.skip("mosquitto binary absent (apt-get install mosquitto)")
    with running_broker(tmp_path) as addr:
        yield addr


def test_validate_section_lists_every_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert validate_sink("mqtt", {"enabled": True}) == []
    problems = validate_sink("mqtt", {"qos": 0, "port": 70000, "topic_prefix": "robot/#", "keepalive_s": "30",
                                      "password": "hunter2"})  # fmt: skip
    assert [p.split(":")[0] for p in problems] == ["mqtt.qos", "mqtt.port", "mqtt.topic_prefix", "mqtt.keepalive_s",
                                                    "mqtt.password"]  # fmt: skip
    assert "events need" not in problems[0] and "is not one of 1, 2" in problems[0]
    cross = validate_sink("mqtt", {"reconnect_min_s": 10, "reconnect_max_s": 5, "password_env": "NOPE_PW",
                                   "cert_file": "c.pem", "ca_file": "ca.pem"})  # fmt: skip
    assert [p.split(":")[0] for p in cross] == ["mqtt.reconnect_min_s", "mqtt.username", "mqtt.key_file",
                                                "mqtt.ca_file", "mqtt.cert_file"]  # fmt: skip
    monkeypatch.delenv("NOPE_PW", raising=False)
    enabled = validate_sink("mqtt", {"enabled": True, "username": "u", "password_env": "NOPE_PW", "tls": True,
                                     "ca_file": str(tmp_path / "missing.pem")})  # fmt: skip
    assert enabled == [
        "mqtt.password_env: environment variable NOPE_PW is not set; export it or use password_file",
        f"mqtt.ca_file: {tmp_path / 'missing.pem'} is not a readable file; fix the path",
    ]


def test_qos1_events_arrive(broker: tuple[str, int]) -> None:
    host, port = broker
    prefix = _prefix("events")
    collector = MqttCollector(host, port, f"{prefix}/events/#")
    sink = open_sink("mqtt", _section(host, port, prefix), None)
    try:
        for i in range(20):
            sink.publish_event(event(i, "glass breaking" if i % 2 else "dog barking", "audio"))
        got = [collector.get() for _ in range(20)]
        assert [json.loads(m.payload)["id"] for m in got] == list(range(20))
        assert {m.qos for m in got} == {1}
        assert got[0].topic == f"{prefix}/events/audio/dog_barking"
        assert got[1].topic == f"{prefix}/events/audio/glass_breaking"
    finally:
        sink.close()
        collector.close()


def test_retained_status_for_late_subscribers(broker: tuple[str, int]) -> None:
    host, port = broker
    prefix = _prefix("status")
    sink = open_sink("mqtt", _section(host, port, prefix), None)
    sink.publish_status({"line": "3 sensors ok"})
    time.sleep(0.2)
    late = MqttCollector(host, port, f"{prefix}/status")
    try:
        msg = late.get()
        assert msg.retain and json.loads(msg.payload) == {"state": "online", "line": "3 sensors ok"}
        sink.close()
        assert late.get_json() == (f"{prefix}/status", {"state": "offline"})
    finally:
        sink.close()
        late.close()
    later = MqttCollector(host, port, f"{prefix}/status")
    assert json.loads(later.get().payload) == {"state": "offline"}
    later.close()


def test_last_will_marks_a_killed_daemon_offline(broker: tuple[str, int]) -> None:
    host, port = broker
    prefix = _prefix("will")
    code = ("import sys, time; from runtime.sinks import open_sink; "
            f"s = open_sink('mqtt', {_section(host, port, prefix)!r}); s.publish_status({{}}); "
            "print('ready', flush=True); time.sleep(60)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        watcher = MqttCollector(host, port, f"{prefix}/status")
        states = [json.loads(watcher.get().payload)["state"]]
        while states[-1] != "online":  # the retained "starting" may still be the first one seen
            states.append(json.loads(watcher.get().payload)["state"])
        assert states in (["online"], ["starting", "online"])
        os.kill(proc.pid, signal.SIGKILL)
        assert watcher.get_json() == (f"{prefix}/status", {"state": "offline"})
        watcher.close()
    finally:
        proc.kill()
        proc.wait(5)


@needs_mosquitto
def test_broker_down_raises_then_reconnects(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.start()
    prefix = _prefix("down")
    section = _section("127.0.0.1", broker.port, prefix, publish_timeout_s=1.0, reconnect_min_s=1, reconnect_max_s=1)
    sink = open_sink("mqtt", section, None)
    try:
        sink.publish_event(event(1))
        broker.stop()
        t0 = time.monotonic()
        errors = []
        while time.monotonic() - t0 < 5.0:  # the first publishes may race the disconnect; none may hang
            t1 = time.monotonic()
            try:
                sink.publish_event(event(2))
            except SinkError as exc:
                errors.append(str(exc))
                break
            finally:
                assert time.monotonic() - t1 < 10.0  # "never hangs"; generous for a loaded 2-core CI machine
            time.sleep(0.05)
        assert errors and errors[0].startswith("mqtt: ")
        broker.start()
        collector = MqttCollector("127.0.0.1", broker.port, f"{prefix}/events/#")

        def delivered() -> bool:
            try:
                sink.publish_event(event(3))
            except SinkError:
                return False
            return True

        assert wait_until(delivered, 10.0, step=0.2), "the sink never reconnected"
        assert json.loads(collector.get().payload)["id"] == 3
        collector.close()
    finally:
        sink.close()
        broker.stop()


@needs_mosquitto
def test_unacknowledged_publish_times_out(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.start()
    sink = open_sink("mqtt", _section("127.0.0.1", broker.port, _prefix("hung"), publish_timeout_s=0.5), None)
    try:
        sink.publish_event(event(1))
        broker.pause()  # connected but silent: no PUBACK ever comes
        t0 = time.monotonic()
        with pytest.raises(SinkError, match="no acknowledgement"):
            sink.publish_event(event(2))
        assert 0.4 < time.monotonic() - t0 < 10.0  # waited for the PUBACK timeout, then gave up (no hang)
    finally:
        broker.stop()
        sink.close()


def test_control_request_reply(broker: tuple[str, int]) -> None:
    host, port = broker
    prefix = _prefix("control")
    control, target = make_control(enabled=True)
    sink = open_sink("mqtt", _section(host, port, prefix), control)
    replies = MqttCollector(host, port, f"{prefix}/control/reply")
    try:
        assert sink.wait_ready(30.0)  # type: ignore[attr-defined]  # subscribed before the first request
        request = {"op": "prompts.set", "prompts": ["siren: a siren"], "id": "r1"}
        replies.publish(f"{prefix}/control/request", json.dumps(request).encode())
        assert replies.get_json()[1] == {"ok": False, "error": "missing or wrong token"}
        replies.publish(f"{prefix}/control/request", json.dumps({**request, "token": TOKEN}).encode())
        assert replies.get_json()[1] == {"ok": True, "labels": ["siren"], "id": "r1"}
        replies.publish(f"{prefix}/control/request", b"\xff\xfe not json")
        assert replies.get_json()[1]["ok"] is False
        assert target.labels == ["siren"]
    finally:
        sink.close()
        replies.close()


def test_no_control_subscription_unless_enabled(broker: tuple[str, int]) -> None:
    host, port = broker
    prefix = _prefix("nocontrol")
    control, target = make_control(enabled=False)
    sink = open_sink("mqtt", _section(host, port, prefix), control)
    replies = MqttCollector(host, port, f"{prefix}/control/reply")
    try:
        assert sink.wait_ready(30.0)  # type: ignore[attr-defined]  # connected: silence below is not a race
        replies.publish(f"{prefix}/control/request", json.dumps({"op": "status"}).encode())
        with pytest.raises(queue.Empty):  # nobody answers
            replies.get(timeout=0.7)
        assert target.labels == ["glass breaking", "dog barking"]
    finally:
        sink.close()
        replies.close()


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)
    with pytest.raises(SinkError, match=r"install paho-mqtt: pip install 'edgebind\[daemon\]'"):
        open_sink("mqtt", {"enabled": True})
