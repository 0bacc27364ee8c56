"""systemd notifications (``Type=notify``) without a dependency: one datagram per message.

The protocol: ``sendto()`` of ``KEY=VALUE`` lines to the Unix datagram socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` is the abstract namespace). Outside systemd the
variable is unset and every call is a no-op returning False. The watchdog: when
``$WATCHDOG_USEC`` is set (and ``$WATCHDOG_PID`` is unset or our pid), the service must
send ``WATCHDOG=1`` more often than that; :meth:`Notifier.watchdog_interval_s` gives half.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

_LOG = logging.getLogger("edgebind.sdnotify")


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET`` (read once, at construction)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        self._watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._addr)

    def watchdog_interval_s(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None when no watchdog."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 2e6

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``KEY=VALUE``) as one datagram; False when not under systemd or on error."""
        if not self._addr:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self._addr)
        except OSError as exc:  # systemd went away or the socket is wrong: never fatal
            _LOG.debug("sd_notify to %s failed: %s", self._addr, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _one_line(text: str) -> str:
    return " ".join(text.split())
