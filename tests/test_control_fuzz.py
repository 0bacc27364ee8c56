"""Fuzzed control messages over the real buses (MQTT via mosquitto, Zenoh on loopback).

Seeded random payloads (random bytes, invalid UTF-8, truncated/deep/huge JSON, non-objects,
wrong types, unknown ops and keys, missing/wrong tokens) each get exactly one error reply; the
sinks keep serving (a valid request still works after the storm) and nothing changes state.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.sinks import open_sink
from runtime.sinks.common import dispatch_control
from tests.sinks_support import (
    MOSQUITTO,
    TOKEN,
    MqttCollector,
    free_port,
    make_control,
    running_broker,
    wait_until,
    zenoh_client,
    zenoh_get,
)

SEED = 20261127
N_PAYLOADS = 60
VALID = {"op": "prompts.set", "prompts": ["siren: a siren wailing"], "token": TOKEN}


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "float", "str", "bool", "null"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "list":
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == "dict":
        return {rng.choice(["op", "token", "prompts", "text", "id", "x"]): _json_value(rng, depth + 1)
                for _ in range(rng.randrange(4))}  # fmt: skip
    text = "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(20)))
    scalars = {"int": rng.randrange(-(2**63), 2**63), "float": rng.random() * 1e308, "bool": rng.random() < 0.5,
               "null": None, "str": text}  # fmt: skip
    return scalars[kind]


def fuzz_payloads(seed: int = SEED, n: int = N_PAYLOADS) -> list[bytes]:
    """Malformed or unauthorised control payloads, deterministic for ``seed``."""
    rng = random.Random(seed)
    valid = json.dumps(VALID).encode()
    no_token = {k: v for k, v in VALID.items() if k != "token"}
    requests = [
        {**VALID, "token": "wrong"}, no_token, {"op": "prompts.set", "token": TOKEN},
        {"op": "prompts.set", "prompts": 5, "token": TOKEN}, {"op": "status", "id": {"nested": True}},
        {"op": "shutdown"}, {"op": "status", "evil": 1}, {"op": "prompts.reload", "token": 7},
    ]  # fmt: skip
    fixed = [
        b"", b"\xff\xfe\xfd", b"null", b"[]", b"42", b'"status"', b"{", valid[: len(valid) // 2],
        b"[" * 50_000, b'{"op": "' + b"x" * 70_000 + b'"}', b'{"op": "status", "op": 1}',
        *(json.dumps(r).encode() for r in requests),
    ]  # fmt: skip
    out = list(fixed)
    while len(out) < n:
        kind = rng.randrange(3)
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(1, 200)))
        elif kind == 1:
            value = _json_value(rng)
            if isinstance(value, dict) and value.get("op") in ("status", "prompts.get") and set(value) <= {"op"}:
                value["evil"] = 1  # keep every fuzzed payload invalid
            out.append(json.dumps(value).encode())
        else:
            body = json.dumps({**VALID, "token": rng.choice(["", "x" * 64, TOKEN[:-1], None])}).encode()
            out.append(body[: rng.randrange(len(body) + 1)] if rng.random() < 0.5 else body)
    return out


def _check_error(reply: Any) -> None:
    assert isinstance(reply, dict) and reply.get("ok") is False, reply
    assert isinstance(reply.get("error"), str) and reply["error"] and "\n" not in reply["error"]


def test_payloads_are_deterministic_and_invalid() -> None:
    assert fuzz_payloads() == fuzz_payloads()
    control, target = make_control(enabled=True)
    for payload in fuzz_payloads():
        _check_error(dispatch_control(control, payload, "test"))
    assert target.labels == ["glass breaking", "dog barking"]


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[tuple[str, int]]:
    pytest.importorskip("paho.mqtt", reason="paho-mqtt not installed (pip install 'edgebind[daemon]')")
    if os.environ.get("EDGEBIND_MQTT_PORT") is None and MOSQUITTO is None:
        pytest.skip("mosquitto binary absent (apt-get install mosquitto)")
    with running_broker(tmp_path) as addr:
        yield addr


def test_mqtt_fuzz(broker: tuple[str, int]) -> None:
    host, port = broker
    prefix = f"edgebind/fuzz/{free_port()}"
    control, target = make_control(enabled=True)
    sink = open_sink("mqtt", {"enabled": True, "host": host, "port": port, "topic_prefix": prefix}, control)
    replies = MqttCollector(host, port, f"{prefix}/control/reply")
    try:
        assert sink.wait_ready(30.0)  # type: ignore[attr-defined]  # subscribed before the first request
        for payload in fuzz_payloads():
            replies.publish(f"{prefix}/control/request", payload)
            _check_error(replies.get_json()[1])
        assert target.labels == ["glass breaking", "dog barking"]
        replies.publish(f"{prefix}/control/request", json.dumps({**VALID, "id": 9}).encode())
        assert replies.get_json()[1] == {"ok": True, "labels": ["siren"], "id": 9}
        assert control.counters()["ok"] == 1
    finally:
        sink.close()
        replies.close()


def test_zenoh_fuzz() -> None:
    pytest.importorskip("zenoh", reason="eclipse-zenoh not installed (pip install 'edgebind[daemon]')")
    port, prefix = free_port(), "edgebind/fuzz"
    control, target = make_control(enabled=True)
    sink = open_sink("zenoh", {"enabled": True, "listen": [f"tcp/127.0.0.1:{port}"], "key_prefix": prefix}, control)
    client = zenoh_client(port)
    try:
        assert wait_until(lambda: zenoh_get(client, f"{prefix}/status", timeout=0.5), 5.0)
        for payload in fuzz_payloads(seed=SEED + 1):
            replies = zenoh_get(client, f"{prefix}/control", payload)
            assert len(replies) == 1 and replies[0][0] == f"{prefix}/control", replies
            _check_error(replies[0][1])
        assert target.labels == ["glass breaking", "dog barking"]
        [(_, reply)] = zenoh_get(client, f"{prefix}/control", json.dumps(VALID).encode())
        assert reply == {"ok": True, "labels": ["siren"]}
    finally:
        client.close()
        sink.close()
