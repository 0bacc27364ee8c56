"""Helpers shared by the sinks: table validation (every problem listed), topic names, control dispatch.

Stdlib only, so ``validate_sink`` works on a device where the sink's transport is not installed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from runtime.config_util import Check, choice, is_bool, positive

__all__ = ["Check", "choice", "is_bool", "positive"]  # re-exported for the sink modules

log = logging.getLogger("edgebind.sinks")

MAX_CONTROL_BYTES = 64 * 1024  # a prompt list fits easily; anything bigger is rejected unparsed
_CHUNK_RE = re.compile(r"[^A-Za-z0-9_.-]+")
_PREFIX_BAD = set("*$?#+ \t\r\n")


class ControlHandlerLike(Protocol):
    """What a sink needs of :class:`runtime.control.ControlHandler`."""

    def handle(self, request: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Key:
    """One allowed key of a sink table: its default and its value check."""

    default: Any
    check: Check


def check_table(table: str, section: Any, schema: Mapping[str, Key]) -> list[str]:
    """Unknown keys and bad values of ``section``, one ``table.key: problem; fix`` line each."""
    if not isinstance(section, Mapping):
        return [f"{table}: expected a table [{table}], got {type(section).__name__}; write it as [{table}]"]
    problems = []
    for key, value in section.items():
        if key not in schema:
            problems.append(f"{table}.{key}: unknown key; valid keys: {', '.join(schema)}")
        elif (why := schema[key].check(value)) is not None:
            problems.append(f"{table}.{key}: {why}")
    return problems


def resolve(section: Mapping[str, Any], schema: Mapping[str, Key]) -> dict[str, Any]:
    """Every key of ``schema``: the section's value where given, else the default."""
    return {key: section.get(key, spec.default) for key, spec in schema.items()}


# -- value checks -------------------------------------------------------------------------------
def is_str(v: Any) -> str | None:
    return None if isinstance(v, str) else f"expected a string, got {v!r}"


def int_range(lo: int, hi: int) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
        return None if ok else f"expected an integer from {lo} to {hi}, got {v!r}"

    return check


def str_list(item: Check) -> Check:
    """A list (possibly empty) whose every item passes ``item``."""

    def check(v: Any) -> str | None:
        if not isinstance(v, list):
            return f"expected a list of strings, got {v!r}"
        for x in v:
            if not isinstance(x, str) or (why := item(x)) is not None:
                return why if isinstance(x, str) else f"expected a list of strings, got item {x!r}"
        return None

    return check


def topic_prefix(v: Any) -> str | None:
    """A key/topic prefix: ``a/b/c`` with non-empty levels and no wildcard or special characters."""
    if not isinstance(v, str) or not v:
        return f"expected a non-empty string like 'edgebind/robot', got {v!r}"
    if v.startswith("/") or v.endswith("/") or "//" in v:
        return f"{v!r} has an empty level; write levels joined by single '/', without leading or trailing '/'"
    bad = sorted(_PREFIX_BAD.intersection(v))
    if bad or v.startswith("@"):
        return f"{v!r} contains reserved characters {''.join(bad) or '@'!r}; use letters, digits, '_', '-', '.'"
    return None


def env_or_file(section: Mapping[str, Any], table: str, env_key: str, file_key: str) -> list[str]:
    """Problems reading a secret given as an environment variable name or a file path (enabled sinks only)."""
    problems = []
    env, path = section.get(env_key), section.get(file_key)
    if isinstance(env, str) and env and isinstance(path, str) and path:
        problems.append(f"{table}.{file_key}: give one of {table}.{env_key} and {table}.{file_key}")
    elif isinstance(env, str) and env and not os.environ.get(env):
        problems.append(f"{table}.{env_key}: environment variable {env} is not set; export it or use {file_key}")
    elif isinstance(path, str) and path and not os.path.isfile(path):
        problems.append(f"{table}.{file_key}: {path} is not a readable file; fix the path")
    return problems


def read_secret(env: str, path: str) -> str:
    """The secret from ``$env`` or the file ``path`` (stripped); empty when neither is given."""
    if env:
        return os.environ.get(env, "").strip()
    if path:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    return ""


# -- names and payloads -------------------------------------------------------------------------
def topic_chunk(text: Any) -> str:
    """One key/topic level from free text: ``"glass breaking!"`` -> ``"glass_breaking"`` (never empty)."""
    chunk = _CHUNK_RE.sub("_", str(text)).strip("_")
    return chunk[:64] or "_"


def event_suffix(event: Mapping[str, Any]) -> str:
    """``events/<modality>/<label>`` for an event dict (levels sanitised by :func:`topic_chunk`)."""
    return f"events/{topic_chunk(event.get('modality', 'unknown'))}/{topic_chunk(event.get('label', 'unknown'))}"


def to_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON; non-JSON values (paths, numpy scalars) become strings."""
    return json.dumps(obj, separators=(",", ":"), default=str).encode("utf-8")


def control_enabled(control: Any) -> bool:
    """Whether remote control writes are exposed: a handler is given and its ``enabled`` flag is true."""
    return control is not None and bool(getattr(control, "enabled", False))


def dispatch_control(control: ControlHandlerLike, payload: bytes | None, where: str) -> dict[str, Any]:
    """Parse a control request and run it; every malformed input gets ``{"ok": false, "error": ...}``.

    Never raises: the bytes come from the network (fuzzed in the tests).
    """
    request, error = parse_request(payload)
    if request is None:
        log.warning("control request on %s rejected: %s", where, error)
        return {"ok": False, "error": error}
    return run_request(control, request, where)


def run_request(control: ControlHandlerLike, request: dict[str, Any], where: str) -> dict[str, Any]:
    """``control.handle(request)``, with a handler exception or a non-dict reply turned into an error reply."""
    try:
        reply = control.handle(request)
    except Exception as exc:  # the handler must not raise; if it does, the bus stays up
        log.error("control handler failed on %s: %s: %s", where, type(exc).__name__, exc)
        return {"ok": False, "error": f"internal error: {type(exc).__name__}"}
    if not isinstance(reply, dict):
        return {"ok": False, "error": "internal error: handler returned no object"}
    return reply


def parse_request(payload: bytes | None) -> tuple[dict[str, Any] | None, str]:
    """A JSON object from ``payload``, or (None, one-line reason)."""
    if not payload:
        return None, "empty request; send a JSON object like {\"op\": \"status\"}"
    if len(payload) > MAX_CONTROL_BYTES:
        return None, f"request too large ({len(payload)} bytes > {MAX_CONTROL_BYTES})"
    try:
        request = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, f"request is not valid UTF-8 JSON ({type(exc).__name__})"
    if not isinstance(request, dict):
        return None, f"request must be a JSON object, got {type(request).__name__}"
    return request, ""
