"""Zenoh sink on loopback: a real subscriber session, the status/prompts/control queryables, validation."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("zenoh", reason="eclipse-zenoh not installed (pip install 'edgebind[daemon]')")

from runtime.sinks import SinkError, open_sink, validate_sink
from tests.sinks_support import TOKEN, event, free_port, make_control, wait_until, zenoh_client, zenoh_get

PREFIX = "edgebind/test"


def _section(port: int, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "listen": [f"tcp/127.0.0.1:{port}"], "key_prefix": PREFIX, **extra}


@pytest.fixture()
def bus() -> Iterator[tuple[Any, Any, Any]]:
    """(sink with control enabled, the fake control target, a client session connected to it)."""
    port = free_port()
    control, target = make_control(enabled=True)
    sink = open_sink("zenoh", _section(port), control)
    client = zenoh_client(port)
    assert wait_until(lambda: zenoh_get(client, f"{PREFIX}/status", timeout=0.5), 5.0), "client never reached sink"
    yield sink, target, client
    client.close()
    sink.close()


def test_validate_section_lists_every_problem() -> None:
    assert validate_sink("zenoh", {}) == []
    assert validate_sink("zenoh", {"enabled": False, "mode": "client", "connect": ["tcp/10.0.0.2:7447"]}) == []
    problems = validate_sink("zenoh", {"mode": "router", "listen": ["tcp/127.0.0.1"], "key_prefix": "a//b",
                                       "connect": "tcp/127.0.0.1:7447", "bogus": 1})  # fmt: skip
    assert [p.split(":")[0] for p in problems] == ["zenoh.mode", "zenoh.listen", "zenoh.key_prefix",
                                                    "zenoh.connect", "zenoh.bogus"]  # fmt: skip
    assert "unknown key" in problems[-1]
    assert validate_sink("zenoh", {"key_prefix": "robot/*"})[0].startswith("zenoh.key_prefix: 'robot/*' contains")
    assert validate_sink("zenoh", {"mode": "client"}) == [
        'zenoh.connect: client mode needs a router to connect to, e.g. ["tcp/127.0.0.1:7447"]'
    ]
    with pytest.raises(SinkError, match=r"zenoh: 1 problem\(s\): zenoh.mode"):
        open_sink("zenoh", {"mode": "router"})


def test_events_reach_a_subscriber(bus: tuple[Any, Any, Any]) -> None:
    sink, _, client = bus
    got: list[Any] = []
    done = threading.Event()

    def on_sample(sample: Any) -> None:
        got.append(sample)
        if len(got) == 20:
            done.set()

    seen = threading.Event()
    sub = client.declare_subscriber(f"{PREFIX}/events/**", on_sample)
    probe = client.declare_subscriber(f"{PREFIX}/status", lambda s: seen.set())
    assert wait_until(lambda: sink.publish_status({"probe": 1}) or seen.is_set(), 5.0), "subscription never matched"
    labels = ["glass breaking", "dog barking!", "fall"]
    for i in range(20):
        sink.publish_event(event(i, labels[i % 3], "audio" if i % 2 else "imu"))
    assert done.wait(5.0), f"only {len(got)} of 20 events arrived"
    keys = [str(s.key_expr) for s in got]
    bodies = [json.loads(s.payload.to_bytes()) for s in got]
    assert [b["id"] for b in bodies] == list(range(20))  # reliable, in order
    assert keys[0] == f"{PREFIX}/events/imu/glass_breaking" and keys[1] == f"{PREFIX}/events/audio/dog_barking"
    assert bodies[1]["label"] == "dog barking!"  # the original label stays in the payload
    assert str(got[0].encoding).startswith("application/json")
    assert json.loads(got[5].attachment.to_bytes()) == {"id": 5}
    sub.undeclare()
    probe.undeclare()


def test_status_queryable_serves_the_latest_status(bus: tuple[Any, Any, Any]) -> None:
    sink, _, client = bus
    sink.publish_status({"line": "all good", "uptime_s": 3.0})
    replies = zenoh_get(client, f"{PREFIX}/status")
    assert replies == [(f"{PREFIX}/status", {"state": "online", "line": "all good", "uptime_s": 3.0})]


def test_prompts_and_control_queryables(bus: tuple[Any, Any, Any]) -> None:
    _, target, client = bus
    [(key, body)] = zenoh_get(client, f"{PREFIX}/prompts")
    assert key == f"{PREFIX}/prompts" and [p["label"] for p in body["prompts"]] == target.labels
    request = {"op": "prompts.set", "prompts": ["siren: a siren wailing"], "id": 3}
    [(_, denied)] = zenoh_get(client, f"{PREFIX}/control", json.dumps(request).encode())
    assert denied == {"ok": False, "error": "missing or wrong token"}
    assert target.labels == ["glass breaking", "dog barking"]
    [(_, done)] = zenoh_get(client, f"{PREFIX}/control", json.dumps({**request, "token": TOKEN}).encode())
    assert done == {"ok": True, "labels": ["siren"], "id": 3} and target.labels == ["siren"]
    [(_, bad)] = zenoh_get(client, f"{PREFIX}/control", b"{not json")
    assert bad["ok"] is False and "JSON" in bad["error"]
    [(_, empty)] = zenoh_get(client, f"{PREFIX}/control")
    assert empty["ok"] is False and "empty request" in empty["error"]


def test_wildcard_get_never_runs_control(bus: tuple[Any, Any, Any]) -> None:
    _, target, client = bus
    request = json.dumps({"op": "prompts.set", "prompts": ["x"], "token": TOKEN}).encode()
    keys = sorted(key for key, _ in zenoh_get(client, f"{PREFIX}/**", request))
    assert keys == [f"{PREFIX}/prompts", f"{PREFIX}/status"]
    assert target.labels == ["glass breaking", "dog barking"]


def test_control_queryable_absent_unless_enabled() -> None:
    port = free_port()
    control, target = make_control(enabled=False)
    sink = open_sink("zenoh", _section(port), control)
    client = zenoh_client(port)
    try:
        assert wait_until(lambda: zenoh_get(client, f"{PREFIX}/prompts", timeout=0.5), 5.0)
        request = json.dumps({"op": "prompts.set", "prompts": ["x"], "token": TOKEN}).encode()
        assert zenoh_get(client, f"{PREFIX}/control", request, timeout=0.5) == []
        assert target.labels == ["glass breaking", "dog barking"]
    finally:
        client.close()
        sink.close()


def test_close_puts_offline_and_later_publishes_fail() -> None:
    port = free_port()
    sink = open_sink("zenoh", _section(port), None)
    client = zenoh_client(port)
    statuses: list[dict[str, Any]] = []
    sub = client.declare_subscriber(f"{PREFIX}/status", lambda s: statuses.append(json.loads(s.payload.to_bytes())))
    try:
        assert wait_until(lambda: sink.publish_status({}) or statuses, 5.0)
        assert zenoh_get(client, f"{PREFIX}/prompts", timeout=0.5) == []  # no control handler: no prompts
        sink.close()
        sink.close()  # idempotent
        assert wait_until(lambda: statuses[-1] == {"state": "offline"}, 3.0)
        with pytest.raises(SinkError, match="closed"):
            sink.publish_event(event(1))
    finally:
        sub.undeclare()
        client.close()


def test_listen_port_in_use_is_one_sink_error() -> None:
    port = free_port()
    first = open_sink("zenoh", _section(port), None)
    try:
        with pytest.raises(SinkError, match="zenoh: cannot open a session"):
            open_sink("zenoh", _section(port), None)
    finally:
        first.close()


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zenoh", None)
    with pytest.raises(SinkError, match=r"install eclipse-zenoh: pip install 'edgebind\[daemon\]'"):
        open_sink("zenoh", {"enabled": True})
