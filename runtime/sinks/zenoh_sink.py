"""Zenoh sink: the daemon's main robot bus (``eclipse-zenoh``, imported when the sink is opened).

Key expressions (``P`` = ``key_prefix``, default ``edgebind/robot``)::

    P/events/<modality>/<label>   put, one JSON event per sample (encoding application/json,
                                  attachment {"id": n}); subscribe to ``P/events/**``
    P/status                      put on every status update, and a queryable answering the
                                  latest status (late joiners: ``z_get P/status``)
    P/prompts                     queryable: GET returns the prompt bank ({"op": "prompts.get"})
    P/control                     queryable, only when [control] is enabled: the query payload is
                                  the JSON request ({"op": "prompts.set", "token": ...}); the reply
                                  is the handler's JSON object ({"ok": true|false, ...})
    P/alive                       liveliness token while the daemon runs (Zenoh's last will)

``<modality>`` and ``<label>`` are sanitised to ``[A-Za-z0-9_.-]`` (``glass breaking`` ->
``glass_breaking``); the payload keeps the original label and the event-log ``id``, so a
consumer de-duplicates events re-published after a crash. A put is best effort (Zenoh has
no end-to-end acknowledgement): ``publish_event`` raises SinkError only when the session is
closed or the put fails locally.

Config table ``[zenoh]``: ``enabled``; ``mode`` = "peer" (default) or "client"; ``listen``
(peer only, default ``["tcp/127.0.0.1:7447"]``: nothing listens beyond localhost unless
configured); ``connect`` (router or peers, e.g. ``["tcp/127.0.0.1:7447"]``; required in
client mode); ``key_prefix``; ``multicast_scouting`` (default false: loopback/CI-friendly,
no UDP multicast on the robot's network).

ROS 2 consumers:

- zenoh-bridge-ros2dds (or the zenoh-plugin-ros2dds in a router) maps DDS topics to plain key
  expressions named after the topic, with CDR payloads. ROS 2 nodes see our keys only if a
  bridge route declares them as a topic of some ROS type; our payload is JSON, so the
  practical path is a small ROS 2 node (or the bridge plus a ``std_msgs/String`` route)
  republishing ``P/events/**``. Plain Zenoh consumers (Python, Rust, C, zenoh-ts) read them as is.
- rmw_zenoh (``RMW_IMPLEMENTATION=rmw_zenoh_cpp``) expects ``<domain>/<topic>/<dds type>/<RIHS01
  type hash>`` keys, CDR payloads, an attachment with sequence number/timestamp/gid and liveliness
  tokens under ``@ros2_lv/``. This sink does **not** emit that layout (it needs the distro's type
  hashes and a ROS message type for events); nodes on rmw_zenoh reach our keys through a bridge
  node as above.
"""

from __future__ import annotations

import json
import logging
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
    event_suffix,
    is_bool,
    resolve,
    str_list,
    to_json,
    topic_prefix,
)

log = logging.getLogger("edgebind.sinks.zenoh")

TABLE = "zenoh"
PROTOCOLS = ("tcp", "udp", "tls", "quic", "ws", "unixsock-stream")


def _endpoint(v: str) -> str | None:
    proto, sep, addr = v.partition("/")
    if not sep or proto not in PROTOCOLS or not addr:
        return f"{v!r} is not an endpoint like 'tcp/127.0.0.1:7447' (protocols: {', '.join(PROTOCOLS)})"
    if proto != "unixsock-stream" and ":" not in addr.split("#")[0]:
        return f"{v!r} has no port; write it like '{proto}/127.0.0.1:7447'"
    return None


SCHEMA: dict[str, Key] = {
    "enabled": Key(False, is_bool),
    "mode": Key("peer", choice(("peer", "client"))),
    "listen": Key(["tcp/127.0.0.1:7447"], str_list(_endpoint)),
    "connect": Key([], str_list(_endpoint)),
    "key_prefix": Key("edgebind/robot", topic_prefix),
    "multicast_scouting": Key(False, is_bool),
}


def validate_section(section: Mapping[str, Any]) -> list[str]:
    """Problems of a ``[zenoh]`` table, one ``zenoh.key: ...`` line each."""
    problems = check_table(TABLE, section, SCHEMA)
    if problems:
        return problems
    cfg = resolve(section, SCHEMA)
    if cfg["mode"] == "client" and not cfg["connect"] and not cfg["multicast_scouting"]:
        problems.append("zenoh.connect: client mode needs a router to connect to, e.g. [\"tcp/127.0.0.1:7447\"]")
    return problems


def zenoh_config(cfg: Mapping[str, Any]) -> Any:
    """A ``zenoh.Config`` for a resolved section (listen endpoints only in peer mode)."""
    import zenoh

    conf = zenoh.Config()
    conf.insert_json5("mode", json.dumps(cfg["mode"]))
    conf.insert_json5("connect/endpoints", json.dumps(cfg["connect"]))
    conf.insert_json5("listen/endpoints", json.dumps(cfg["listen"] if cfg["mode"] == "peer" else []))
    conf.insert_json5("scouting/multicast/enabled", json.dumps(cfg["multicast_scouting"]))
    return conf


class ZenohSink:
    """Publishes events and status on Zenoh and serves status/prompts/control queryables.

    Args:
        section: the ``[zenoh]`` table (validated by :func:`validate_section`).
        control: the daemon's control handler (None: no prompts/control queryables).
    """

    name = "zenoh"

    def __init__(self, section: Mapping[str, Any], control: ControlHandlerLike | None = None) -> None:
        import zenoh

        self._zenoh = zenoh
        cfg = resolve(section, SCHEMA)
        self.prefix: str = cfg["key_prefix"]
        self._control = control
        self._lock = threading.Lock()
        self._status = to_json({"state": "starting"})
        try:
            self._session = zenoh.open(zenoh_config(cfg))
        except zenoh.ZError as exc:
            raise SinkError(f"zenoh: cannot open a session ({exc}); check zenoh.listen / zenoh.connect") from None
        self._closed = False
        self._entities: list[Any] = [self._session.declare_queryable(f"{self.prefix}/status", self._on_status)]
        if control is not None:
            self._entities.append(self._session.declare_queryable(f"{self.prefix}/prompts", self._on_prompts))
        if control_enabled(control):
            self._entities.append(self._session.declare_queryable(f"{self.prefix}/control", self._on_control))
        self._entities.append(self._session.liveliness().declare_token(f"{self.prefix}/alive"))
        log.info("zenoh sink up: key prefix %s, control %s", self.prefix, "on" if control_enabled(control) else "off")

    # -- publishing -----------------------------------------------------------------------------
    def publish_event(self, event: dict[str, Any]) -> None:
        """Put ``event`` on ``P/events/<modality>/<label>``; SinkError if the session cannot send it."""
        key = f"{self.prefix}/{event_suffix(event)}"
        self._put(key, to_json(event), attachment=to_json({"id": event.get("id")}))

    def publish_status(self, status: dict[str, Any]) -> None:
        """Remember ``status`` for the queryable and put it on ``P/status`` (a failed put is only logged)."""
        self._status = to_json({"state": "online", **status})
        try:
            self._put(f"{self.prefix}/status", self._status)
        except SinkError as exc:
            log.warning("%s", exc)

    def _put(self, key: str, payload: bytes, attachment: bytes | None = None) -> None:
        z = self._zenoh
        with self._lock:
            if self._closed:
                raise SinkError("zenoh: the session is closed")
            try:
                self._session.put(key, payload, encoding=z.Encoding.APPLICATION_JSON, attachment=attachment,
                                  congestion_control=z.CongestionControl.BLOCK)  # fmt: skip
            except z.ZError as exc:
                raise SinkError(f"zenoh: put on {key} failed ({exc})") from None

    # -- queryables (run on Zenoh's threads; never raise) ---------------------------------------
    def _reply(self, query: Any, key: str, payload: bytes) -> None:
        try:
            query.reply(key, payload, encoding=self._zenoh.Encoding.APPLICATION_JSON)
        except Exception as exc:  # the querier went away or the session is closing
            log.debug("zenoh reply on %s failed: %s", key, exc)

    def _on_status(self, query: Any) -> None:
        self._reply(query, f"{self.prefix}/status", self._status)

    def _on_prompts(self, query: Any) -> None:
        assert self._control is not None
        reply = dispatch_control(self._control, to_json({"op": "prompts.get"}), "zenoh prompts")
        self._reply(query, f"{self.prefix}/prompts", to_json(reply))

    def _on_control(self, query: Any) -> None:
        key = f"{self.prefix}/control"
        if str(query.key_expr) != key:
            return  # a wildcard GET (e.g. P/**) never runs a control request
        payload = query.payload.to_bytes() if query.payload is not None else None
        assert self._control is not None
        self._reply(query, key, to_json(dispatch_control(self._control, payload, "zenoh " + key)))

    def close(self) -> None:
        """Put an "offline" status, undeclare everything and close the session (idempotent)."""
        with self._lock:
            if self._closed:
                return
        try:
            self._put(f"{self.prefix}/status", to_json({"state": "offline"}))
        except SinkError:
            pass
        with self._lock:
            self._closed = True
            for entity in reversed(self._entities):
                try:
                    entity.undeclare()
                except Exception as exc:  # already gone with the session
                    log.debug("zenoh undeclare failed: %s", exc)
            self._session.close()
