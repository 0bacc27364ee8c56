"""Sink registry: config table name -> ``"module:Class"``, resolved only when opened (design §2).

A sink publishes the daemon's events and status to a robot-facing bus and, when remote
control is enabled, serves control requests through the daemon's ``ControlHandler``::

    problems = validate_sink("zenoh", cfg.zenoh)          # stdlib only; one line per problem
    sink = open_sink("zenoh", cfg.zenoh, control_handler)  # imports eclipse-zenoh here
    sink.publish_event({"type": "event", "id": 7, ...})   # raises SinkError if not delivered
    sink.publish_status({...}); sink.close()

A missing transport package gives one :class:`SinkError` line naming the extra to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from runtime.errors import EdgebindError
from runtime.sinks.common import ControlHandlerLike

EXTRA = "daemon"
INSTALL_HINT = f"pip install 'edgebind[{EXTRA}]'"


class SinkError(EdgebindError):
    """A sink could not be opened, or did not deliver a message (the daemon keeps it logged and retries)."""


class Sink(Protocol):
    """What the daemon drives; every method is called from the daemon's publisher thread."""

    name: str

    def publish_event(self, event: dict[str, Any]) -> None:
        """Deliver one event (carries its event-log ``id``); raise SinkError if not delivered."""

    def publish_status(self, status: dict[str, Any]) -> None:
        """Publish the latest status (retained / served to late joiners); never raises for a lost update."""

    def close(self) -> None:
        """Announce "offline" where the bus allows it and release the connection (idempotent)."""


class SinkEntry(NamedTuple):
    """Where a sink lives: ``target`` is ``"module:Class"``; the module has ``validate_section``."""

    target: str
    package: str


_REGISTRY: dict[str, SinkEntry] = {
    "zenoh": SinkEntry("runtime.sinks.zenoh_sink:ZenohSink", "eclipse-zenoh"),
    "mqtt": SinkEntry("runtime.sinks.mqtt_sink:MqttSink", "paho-mqtt"),
}

__all__ = ["INSTALL_HINT", "Sink", "SinkEntry", "SinkError", "available_sinks", "open_sink", "validate_sink"]


def available_sinks() -> tuple[str, ...]:
    """Table names accepted by :func:`open_sink`."""
    return tuple(_REGISTRY)


def _module(name: str) -> Any:
    if name not in _REGISTRY:
        raise SinkError(f"unknown sink {name!r}: expected one of {', '.join(_REGISTRY)}")
    return importlib.import_module(_REGISTRY[name].target.split(":")[0])


def validate_sink(name: str, section: Mapping[str, Any]) -> list[str]:
    """Every problem of the ``[name]`` table, one ``name.key: problem; fix`` line each (empty when fine).

    Needs no transport package: the checks are stdlib only.
    """
    if name not in _REGISTRY:
        return [f"{name}: unknown sink; known sinks: {', '.join(_REGISTRY)}"]
    problems: list[str] = _module(name).validate_section(section)
    return problems


def open_sink(name: str, section: Mapping[str, Any], control: ControlHandlerLike | None = None) -> Sink:
    """Validate ``section`` and connect sink ``name``.

    Args:
        control: the daemon's control handler; read-only queries (status, prompts) use it, and
            writes are exposed only when its ``enabled`` attribute is true.

    Raises:
        SinkError: unknown sink, bad section (all problems in one message), transport package
            missing, or the connection could not be set up.
    """
    problems = validate_sink(name, section)
    if problems:
        raise SinkError(f"{name}: {len(problems)} problem(s): " + " | ".join(problems))
    entry = _REGISTRY[name]
    cls = getattr(_module(name), entry.target.split(":")[1])
    try:
        sink: Sink = cls(section, control)
    except ImportError as exc:  # the transport is imported by the constructor
        raise SinkError(f"sink {name!r} unavailable: {exc} (install {entry.package}: {INSTALL_HINT})") from None
    return sink
