"""Shared helpers for the sink tests: free ports, a private mosquitto broker, bus clients, a control target."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.control import ControlHandler

TOKEN = "fuzz-test-token-0123456789abcdef"
MOSQUITTO = shutil.which("mosquitto")
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto binary absent (apt-get install mosquitto)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float = 5.0, step: float = 0.02) -> Any:
    """Poll ``pred`` until it returns something truthy (returned) or ``timeout`` passes (None)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := pred():
            return value
        time.sleep(step)
    return None


class FakeTarget:
    """What :class:`runtime.control.ControlHandler` controls, without a daemon."""

    def __init__(self) -> None:
        self.labels = ["glass breaking", "dog barking"]

    def status(self) -> dict[str, Any]:
        return {"running": True, "labels": list(self.labels)}

    def prompts(self) -> list[dict[str, Any]]:
        return [{"label": label, "templates": [label]} for label in self.labels]

    def parse_prompts(self, lines: list[str], where: str) -> tuple[Any, ...]:
        return tuple(line.split(":")[0].strip() for line in lines if line.strip())

    def set_prompts(self, prompts: tuple[Any, ...], origin: str) -> dict[str, Any]:
        self.labels = list(prompts)
        return {"labels": list(self.labels)}

    def reload_prompts(self, origin: str) -> dict[str, Any]:
        return {"labels": list(self.labels)}

    def search_memory(self, request: dict[str, Any], examples: bool) -> dict[str, Any]:
        return {"ok": True, "query": request.get("query"), "hits": [], "searched": 0, "examples": examples}


class ListSink:
    """A daemon sink (``extra_sinks``) keeping published events in a list; ``ListSink.last`` is the newest one."""

    name = "listsink"
    last: ListSink | None = None

    def __init__(self, section: Any, control: Any) -> None:
        self.events: list[dict[str, Any]] = []
        ListSink.last = self

    def publish_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def publish_status(self, status: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def make_control(enabled: bool = True) -> tuple[ControlHandler, FakeTarget]:
    target = FakeTarget()
    return ControlHandler(target, enabled=enabled, token=TOKEN if enabled else ""), target


# -- mosquitto ----------------------------------------------------------------------------------
class Broker:
    """A mosquitto process on 127.0.0.1:``port`` that the test starts, stops, pauses and restarts."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             "set_tcp_nodelay true\n")
        self.log = workdir / f"mosquitto-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def accepting(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
            return True
        return False

    def start(self) -> None:
        assert MOSQUITTO is not None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        if not wait_until(self.accepting, 5.0):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on port {self.port}: {self.log.read_text()[-500:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case a test paused it
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


@contextlib.contextmanager
def running_broker(workdir: Path, shared: bool = True) -> Iterator[tuple[str, int]]:
    """(host, port) of a broker: ``$EDGEBIND_MQTT_PORT`` (scripts/start_mosquitto.sh) when set and
    ``shared``, else a private one started here and stopped after."""
    port = os.environ.get("EDGEBIND_MQTT_PORT")
    if shared and port:
        yield os.environ.get("EDGEBIND_MQTT_HOST", "127.0.0.1"), int(port)
        return
    broker = Broker(workdir)
    broker.start()
    try:
        yield "127.0.0.1", broker.port
    finally:
        broker.stop()


class MqttCollector:
    """A paho client subscribed to ``topic``; received messages land in :attr:`messages`."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: queue.Queue[Any] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"collector-{time.monotonic_ns()}")
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_socket_open = lambda c, u, sock: sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.connect(host, port, 30)
        self.client.loop_start()
        subscribed.get(timeout=5)

    def get(self, timeout: float = 5.0) -> Any:
        return self.messages.get(timeout=timeout)

    def get_json(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
        msg = self.get(timeout)
        return msg.topic, json.loads(msg.payload)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- zenoh --------------------------------------------------------------------------------------
def zenoh_client(port: int) -> Any:
    """A Zenoh peer session that connects to the sink's loopback listener (no scouting, no listener)."""
    import zenoh

    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("connect/endpoints", json.dumps([f"tcp/127.0.0.1:{port}"]))
    conf.insert_json5("listen/endpoints", "[]")
    conf.insert_json5("scouting/multicast/enabled", "false")
    return zenoh.open(conf)


def zenoh_get(session: Any, key: str, payload: bytes | None = None, timeout: float = 3.0) -> list[tuple[str, Any]]:
    """Every reply of a GET: (key, JSON body) for ok replies, ("error", text) for error replies."""
    out: list[tuple[str, Any]] = []
    for reply in session.get(key, payload=payload, timeout=timeout):
        if reply.ok is not None:
            out.append((str(reply.ok.key_expr), json.loads(reply.ok.payload.to_bytes())))
        else:
            out.append(("error", reply.err.payload.to_bytes().decode(errors="replace")))
    return out


def event(i: int, label: str = "glass breaking", modality: str = "audio") -> dict[str, Any]:
    """An event dict as the daemon publishes it (runtime/stream.py schema + ``id``)."""
    return {"type": "event", "id": i, "label": label, "score": 0.42, "margin": 0.1, "modality": modality,
            "source": "sim://demo", "stream": "mic", "start_ns": i, "end_ns": i + 1}  # fmt: skip
