"""MQTT sink (``paho-mqtt`` 2.x, imported when the sink is opened): QoS 1 events, retained status.

Topics (``P`` = ``topic_prefix``, default ``edgebind/robot``)::

    P/events/<modality>/<label>   QoS ``qos`` (1 by default), one JSON event each (with its event-log
                                  ``id`` for de-duplication); subscribe to ``P/events/#``
    P/status                      retained JSON status {"state": "online", ...}; the broker publishes
                                  the last will {"state": "offline"} (retained) if the daemon vanishes
    P/control/request             only when [control] is enabled: a JSON request ({"op": ..., "token":
                                  ..., "id": 7}); the handler echoes ``id`` in its reply
    P/control/reply               the handler's JSON reply ({"ok": true|false, ...}), QoS 1

``publish_event`` waits (at most ``publish_timeout_s``) for the broker's PUBACK and raises
SinkError when the client is disconnected or no acknowledgement came, so the daemon keeps the
event in its log and retries; a retried event may arrive twice (same ``id``). The client
reconnects by itself with exponential backoff (``reconnect_min_s`` .. ``reconnect_max_s``);
after each connect it re-subscribes and re-publishes the latest status. The client sets
TCP_NODELAY; set ``set_tcp_nodelay true`` on the broker too, or every control reply waits
~40 ms for Nagle's algorithm (scripts/start_mosquitto.sh does).

Config table ``[mqtt]``: ``enabled``, ``host`` ("127.0.0.1"), ``port`` (1883), ``topic_prefix``,
``qos`` (1 or 2), ``client_id`` ("" = ``edgebind-<host>-<pid>``), ``keepalive_s`` (30),
``publish_timeout_s`` (5), ``reconnect_min_s`` (1), ``reconnect_max_s`` (30), ``max_queued``
(1000), ``username``, ``password_env`` | ``password_file`` (never the password itself),
``tls`` (false), ``ca_file``, ``cert_file`` + ``key_file`` (client certificate), ``tls_insecure``.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections.abc import Mapping
from typing import Any

from runtime.sinks import SinkError
from runtime.sinks.common import (
    ControlHandlerLike,
    Key,
    check_table,
    choice,
    control_enabled,
    dispatch_control,
    env_or_file,
    event_suffix,
    int_range,
    is_bool,
    is_str,
    positive,
    read_secret,
    resolve,
    to_json,
    topic_prefix,
)

log = logging.getLogger("edgebind.sinks.mqtt")

TABLE = "mqtt"
CONNECT_WAIT_S = 2.0  # how long the constructor waits for the first CONNACK (the broker may come later)
CONTROL_QUEUE = 16  # control requests waiting for the worker; more are answered "busy"

SCHEMA: dict[str, Key] = {
    "enabled": Key(False, is_bool),
    "host": Key("127.0.0.1", lambda v: None if isinstance(v, str) and v.strip() else f"expected a host, got {v!r}"),
    "port": Key(1883, int_range(1, 65535)),
    "topic_prefix": Key("edgebind/robot", topic_prefix),
    "qos": Key(1, choice((1, 2))),
    "client_id": Key("", is_str),
    "keepalive_s": Key(30, int_range(5, 3600)),
    "publish_timeout_s": Key(5.0, positive),
    "reconnect_min_s": Key(1, int_range(1, 600)),
    "reconnect_max_s": Key(30, int_range(1, 3600)),
    "max_queued": Key(1000, int_range(1, 1_000_000)),
    "username": Key("", is_str),
    "password_env": Key("", is_str),
    "password_file": Key("", is_str),
    "tls": Key(False, is_bool),
    "ca_file": Key("", is_str),
    "cert_file": Key("", is_str),
    "key_file": Key("", is_str),
    "tls_insecure": Key(False, is_bool),
}


def validate_section(section: Mapping[str, Any]) -> list[str]:
    """Problems of an ``[mqtt]`` table, one ``mqtt.key: ...`` line each (secrets/files: enabled only)."""
    problems = check_table(TABLE, section, SCHEMA)
    if problems:
        return problems
    cfg = resolve(section, SCHEMA)
    if cfg["reconnect_min_s"] > cfg["reconnect_max_s"]:
        problems.append("mqtt.reconnect_min_s: must be <= mqtt.reconnect_max_s")
    if (cfg["password_env"] or cfg["password_file"]) and not cfg["username"]:
        problems.append("mqtt.username: a password is configured but no username; set mqtt.username")
    if bool(cfg["cert_file"]) != bool(cfg["key_file"]):
        problems.append("mqtt.key_file: a client certificate needs both mqtt.cert_file and mqtt.key_file")
    for key in ("ca_file", "cert_file", "key_file", "tls_insecure"):
        if cfg[key] and not cfg["tls"]:
            problems.append(f"mqtt.{key}: only used with TLS; set mqtt.tls = true or remove it")
    if cfg["enabled"]:
        problems += env_or_file(section, TABLE, "password_env", "password_file")
        for key in ("ca_file", "cert_file", "key_file"):
            if cfg[key] and not os.path.isfile(cfg[key]):
                problems.append(f"mqtt.{key}: {cfg[key]} is not a readable file; fix the path")
    return problems


def _no_delay(client: Any, userdata: Any, sock: Any) -> None:
    """Send small packets (events, PUBACKs, replies) at once instead of waiting ~40 ms for Nagle."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError) as exc:  # a websocket wrapper or an exotic transport
        log.debug("mqtt: TCP_NODELAY not set: %s", exc)


class MqttSink:
    """Publishes events (QoS 1, acknowledged) and retained status; serves control when enabled.

    Args:
        section: the ``[mqtt]`` table (validated by :func:`validate_section`).
        control: the daemon's control handler; subscribed only when its ``enabled`` is true.
    """

    name = "mqtt"

    def __init__(self, section: Mapping[str, Any], control: ControlHandlerLike | None = None) -> None:
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.cfg = resolve(section, SCHEMA)
        self.prefix: str = self.cfg["topic_prefix"]
        self._control = control if control_enabled(control) else None
        self._status = to_json({"state": "starting"})
        self._connected = threading.Event()
        self._ready = threading.Event()  # connected and, with control on, subscribed to its requests
        self._closed = False
        self._requests: queue.Queue[bytes | None] = queue.Queue(CONTROL_QUEUE)
        self._client = self._make_client()
        self._worker: threading.Thread | None = None
        if self._control is not None:
            self._worker = threading.Thread(target=self._serve_control, name="mqtt-control", daemon=True)
            self._worker.start()
        self._client.connect_async(self.cfg["host"], self.cfg["port"], self.cfg["keepalive_s"])
        self._client.loop_start()
        if not self._connected.wait(CONNECT_WAIT_S):
            log.warning("mqtt broker %s:%d not reachable yet; retrying in the background",
                        self.cfg["host"], self.cfg["port"])  # fmt: skip

    def _make_client(self) -> Any:
        mqtt, cfg = self._mqtt, self.cfg
        client_id = cfg["client_id"] or f"edgebind-{socket.gethostname()}-{os.getpid()}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        client.reconnect_delay_set(cfg["reconnect_min_s"], cfg["reconnect_max_s"])
        client.max_queued_messages_set(cfg["max_queued"])
        client.will_set(self.topic("status"), to_json({"state": "offline"}), qos=1, retain=True)
        if cfg["username"]:
            password = read_secret(cfg["password_env"], cfg["password_file"]) or None
            client.username_pw_set(cfg["username"], password)
        if cfg["tls"]:
            client.tls_set(ca_certs=cfg["ca_file"] or None, certfile=cfg["cert_file"] or None,
                           keyfile=cfg["key_file"] or None)  # fmt: skip
            client.tls_insecure_set(cfg["tls_insecure"])
        client.on_socket_open = _no_delay
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until connected and (with control enabled) subscribed to control requests."""
        return self._ready.wait(timeout_s)

    def topic(self, suffix: str) -> str:
        """``<topic_prefix>/<suffix>``."""
        return f"{self.prefix}/{suffix}"

    # -- callbacks (paho's network thread) ------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("mqtt broker refused the connection: %s", reason)
            return
        if self._control is not None:
            client.subscribe(self.topic("control/request"), qos=1)
        else:
            self._ready.set()
        client.publish(self.topic("status"), self._status, qos=1, retain=True)
        self._connected.set()
        log.info("mqtt connected to %s:%d", self.cfg["host"], self.cfg["port"])

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reasons: Any, properties: Any) -> None:
        self._ready.set()  # the only subscription is the control request topic

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected.clear()
        self._ready.clear()
        if not self._closed:
            log.warning("mqtt disconnected (%s); reconnecting with backoff", reason)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            self._requests.put_nowait(bytes(message.payload))
        except queue.Full:
            self._reply({"ok": False, "error": "busy: too many control requests; retry later"})

    # -- control --------------------------------------------------------------------------------
    def _serve_control(self) -> None:
        """Run queued control requests one at a time, off the network thread."""
        assert self._control is not None
        where = "mqtt " + self.topic("control/request")
        while (payload := self._requests.get()) is not None:
            self._reply(dispatch_control(self._control, payload, where))

    def _reply(self, reply: dict[str, Any]) -> None:
        self._client.publish(self.topic("control/reply"), to_json(reply), qos=1)

    # -- publishing -----------------------------------------------------------------------------
    def publish_event(self, event: dict[str, Any]) -> None:
        """Publish ``event`` and wait for the broker's acknowledgement; SinkError if none came."""
        if self._closed:
            raise SinkError("mqtt: the sink is closed")
        topic = self.topic(event_suffix(event))
        if not self._client.is_connected():
            raise SinkError(f"mqtt: not connected to {self.cfg['host']}:{self.cfg['port']}; event kept for retry")
        info = self._client.publish(topic, to_json(event), qos=self.cfg["qos"])
        try:
            info.wait_for_publish(self.cfg["publish_timeout_s"])
        except (RuntimeError, ValueError) as exc:
            raise SinkError(f"mqtt: publish on {topic} failed ({exc}); event kept for retry") from None
        if not info.is_published():
            raise SinkError(f"mqtt: no acknowledgement for {topic} within {self.cfg['publish_timeout_s']} s")

    def publish_status(self, status: dict[str, Any]) -> None:
        """Publish ``status`` retained (re-sent after every reconnect; never raises)."""
        self._status = to_json({"state": "online", **status})
        if self._client.is_connected():
            self._client.publish(self.topic("status"), self._status, qos=1, retain=True)

    def close(self) -> None:
        """Publish a retained "offline" status, disconnect and stop the threads (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._client.is_connected():
            info = self._client.publish(self.topic("status"), to_json({"state": "offline"}), qos=1, retain=True)
            try:
                info.wait_for_publish(min(2.0, self.cfg["publish_timeout_s"]))
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()
        if self._worker is not None:
            while not self._requests.empty():  # the network loop is stopped: nothing adds any more
                self._requests.get_nowait()
            self._requests.put_nowait(None)
            self._worker.join(timeout=2.0)
