"""Remote control of the daemon: status and prompt queries, prompt changes, behind a token.

Requests are JSON objects; replies ``{"ok": true, ...}`` or ``{"ok": false, "error": "one line"}``::

    {"op": "status"}                                         read-only, always allowed
    {"op": "prompts.get"}                                    read-only, always allowed
    {"op": "prompts.set", "prompts": ["label: t1 | t2", ...] | "text": "<prompt file text>", "token": T}
    {"op": "prompts.reload", "token": T}                     re-read [prompts] file
    {"op": "memory.search", "query": "glass breaking" | "vector": [...], "since": "10m", "until": ...,
     "modality": "audio" | [...], "top": 10, "min_score": 0.2}   read-only; needs [memory] enabled.
                                                             Example terms (@audio:clip.wav: files on
                                                             the robot) only with the token.

Ops that change state need ``[control] enabled = true`` and the token (compared with
``hmac.compare_digest``). The handler never raises: malformed, oversized or unauthorised
requests are rejected, counted by reason and logged (at most one line per second, with the
number suppressed). Sinks (Zenoh queryables, MQTT request topics) call :meth:`handle_bytes`.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from runtime.errors import EdgebindError
from runtime.prompts import Prompt

_LOG = logging.getLogger("edgebind.control")
MAX_REQUEST_BYTES = 64 * 1024
MAX_PROMPTS = 256
READ_OPS = ("status", "prompts.get", "memory.search")
WRITE_OPS = ("prompts.set", "prompts.reload")
_SEARCH_KEYS = {"query", "vector", "since", "until", "modality", "top", "min_score"}
_REQUEST_KEYS = {"op", "token", "prompts", "text", "id", *_SEARCH_KEYS}


class ControlTarget(Protocol):
    """What the handler controls (the daemon)."""

    def status(self) -> dict[str, Any]: ...

    def prompts(self) -> list[dict[str, Any]]: ...

    def set_prompts(self, prompts: tuple[Prompt, ...], origin: str) -> dict[str, Any]: ...

    def reload_prompts(self, origin: str) -> dict[str, Any]: ...

    def parse_prompts(self, lines: list[str], where: str) -> tuple[Prompt, ...]: ...

    def search_memory(self, request: Mapping[str, Any], examples: bool) -> dict[str, Any]: ...


class ControlError(EdgebindError):
    """A rejected request; ``reason`` is the counter name."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ControlHandler:
    """Validates and dispatches control requests (thread-safe; never raises).

    Args:
        target: the daemon.
        enabled: whether state-changing ops are allowed at all.
        token: the shared secret (required when ``enabled``).
    """

    def __init__(self, target: ControlTarget, enabled: bool = False, token: str = "") -> None:
        if enabled and not token:
            raise ValueError("control enabled without a token")
        self._target, self.enabled, self._token = target, enabled, token.encode()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._last_log = 0.0
        self._suppressed = 0

    def counters(self) -> dict[str, int]:
        """Requests accepted (``ok``) and rejected, by reason (``rejected_<reason>``)."""
        with self._lock:
            return dict(self._counts)

    def handle_bytes(self, payload: bytes | str) -> bytes:
        """:meth:`handle` for a raw JSON payload; the reply as JSON bytes."""
        try:
            if len(payload) > MAX_REQUEST_BYTES:
                raise ControlError("too_large", f"request of {len(payload)} bytes; the limit is {MAX_REQUEST_BYTES}")
            try:
                request = json.loads(payload)
            except (ValueError, RecursionError) as exc:
                raise ControlError("malformed", f"not JSON ({type(exc).__name__}); send a JSON object") from None
            reply = self._dispatch(request)
        except ControlError as exc:
            reply = self._reject(exc)
        except Exception as exc:  # never let a request kill a sink's thread
            reply = self._reject(ControlError("internal", f"{type(exc).__name__}: {exc}"))
        return json.dumps(reply, default=str).encode()

    def handle(self, request: Any) -> dict[str, Any]:
        """Answer one request (any value; see the module docstring)."""
        try:
            return self._dispatch(request)
        except ControlError as exc:
            return self._reject(exc)
        except Exception as exc:  # never let a request kill a sink's thread
            return self._reject(ControlError("internal", f"{type(exc).__name__}: {exc}"))

    def _dispatch(self, request: Any) -> dict[str, Any]:
        op = _check_request(request)
        if op in WRITE_OPS:
            self._authorise(request)
        reply: dict[str, Any]
        try:
            if op == "status":
                reply = {"ok": True, "status": self._target.status()}
            elif op == "prompts.get":
                reply = {"ok": True, "prompts": self._target.prompts()}
            elif op == "memory.search":
                reply = self._search(request)
            elif op == "prompts.reload":
                reply = {"ok": True, **self._target.reload_prompts("control")}
            else:
                reply = {"ok": True, **self._target.set_prompts(self._new_prompts(request), "control")}
        except EdgebindError as exc:
            if isinstance(exc, ControlError):
                raise
            raise ControlError("bad_prompts", str(exc)) from None
        if "id" in request:
            reply["id"] = request["id"]
        self._count("ok")
        return reply

    def _search(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """``memory.search``: a failed search is a rejected request (counted ``rejected_bad_search``)."""
        examples = "token" in request
        if examples:
            self._authorise(request)  # a wrong token is refused, not silently downgraded
        reply = self._target.search_memory({k: v for k, v in request.items() if k in _SEARCH_KEYS}, examples)
        if not reply.get("ok"):
            raise ControlError("bad_search", str(reply.get("error", "search failed")))
        return reply

    def _authorise(self, request: Mapping[str, Any]) -> None:
        if not self.enabled:
            raise ControlError("disabled", "remote control is disabled; set [control] enabled = true with a token")
        token = request.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self._token):
            raise ControlError("unauthorised", "missing or wrong token")

    def _new_prompts(self, request: Mapping[str, Any]) -> tuple[Prompt, ...]:
        has_list, has_text = "prompts" in request, "text" in request
        if has_list == has_text:
            raise ControlError("malformed", "prompts.set needs exactly one of 'prompts' (list) or 'text'")
        if has_text:
            if not isinstance(request["text"], str):
                raise ControlError("malformed", "'text' must be a string in the prompt-file format")
            lines = request["text"].splitlines()
        else:
            lines = request["prompts"]
            if not isinstance(lines, list) or not all(isinstance(s, str) for s in lines):
                raise ControlError("malformed", "'prompts' must be a list of strings ('label: t1 | t2' or a text)")
        if not 0 < len(lines) <= MAX_PROMPTS * 4:
            raise ControlError("malformed", f"give 1 to {MAX_PROMPTS} prompts")
        try:
            prompts = self._target.parse_prompts(lines, "prompts.set")
        except EdgebindError as exc:
            raise ControlError("bad_prompts", str(exc)) from None
        if len(prompts) > MAX_PROMPTS:
            raise ControlError("malformed", f"{len(prompts)} prompts; the limit is {MAX_PROMPTS}")
        return prompts

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1

    def _reject(self, exc: ControlError) -> dict[str, Any]:
        self._count(f"rejected_{exc.reason}")
        message = " ".join(str(exc).split())[:300]
        now = time.monotonic()
        with self._lock:
            quiet = now - self._last_log < 1.0
            if quiet:
                self._suppressed += 1
            else:
                self._last_log, suppressed, self._suppressed = now, self._suppressed, 0
        if not quiet:
            more = f" ({suppressed} more rejected in the last second)" if suppressed else ""
            _LOG.warning("control request rejected (%s): %s%s", exc.reason, message, more)
        return {"ok": False, "error": message}


def _check_request(request: Any) -> str:
    """The op of a well-formed request; ControlError otherwise."""
    if not isinstance(request, Mapping):
        raise ControlError("malformed", f"expected a JSON object, got {type(request).__name__}")
    unknown = sorted(str(k) for k in request if k not in _REQUEST_KEYS)
    if unknown:
        raise ControlError("malformed", f"unknown key {unknown[0][:40]!r}; valid: {', '.join(sorted(_REQUEST_KEYS))}")
    op = request.get("op")
    if op not in READ_OPS + WRITE_OPS:
        shown = op[:40] if isinstance(op, str) else type(op).__name__
        raise ControlError("unknown_op", f"unknown op {shown!r}; valid: {', '.join(READ_OPS + WRITE_OPS)}")
    rid = request.get("id")
    if rid is not None and not (isinstance(rid, (str, int)) and not isinstance(rid, bool) and len(str(rid)) <= 64):
        raise ControlError("malformed", "'id' must be a short string or integer")
    return str(op)
