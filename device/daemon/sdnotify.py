"""The systemd notify protocol (READY=1, WATCHDOG=1, STATUS=, STOPPING=1) in pure Python over $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends notify messages to systemd when it asked for them; does nothing otherwise.

    systemd sets NOTIFY_SOCKET (a unix datagram socket path, or '@name' for the
    abstract namespace) for Type=notify services, and WATCHDOG_USEC when
    WatchdogSec= is set. A watchdog ping is sent at most every half interval
    (the rate sd_watchdog_enabled(3) recommends), only when watchdog_tick() is
    called, so a loop that stops making progress stops the pings and systemd
    restarts the service.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ, clock: Callable[[], float] = time.monotonic):
        self.address = environ.get("NOTIFY_SOCKET") or None
        self.clock = clock
        self.watchdog_seconds: float | None = None
        usec = environ.get("WATCHDOG_USEC")
        pid = environ.get("WATCHDOG_PID")
        if usec and (not pid or pid == str(os.getpid())):
            try:
                self.watchdog_seconds = int(usec) / 1e6 or None
            except ValueError:
                logger.warning("WATCHDOG_USEC=%r is not a number: watchdog pings disabled", usec)
        self._last_ping = float("-inf")
        self._socket: socket.socket | None = None
        self.ready_sent = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send one datagram of newline-separated KEY=VALUE fields; False if not under systemd or on error."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            logger.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str = "") -> None:
        """READY=1, once: call it after the first analysed window."""
        if not self.ready_sent:
            self.ready_sent = True
            self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog_tick(self) -> None:
        """Call each time the daemon as a whole makes progress; pings at most every half interval.

        The runner calls it only while both the analysis loop and the MQTT publisher make
        progress, so either one stalling stops the pings and systemd restarts the service.
        """
        if self.watchdog_seconds is None:
            return
        now = self.clock()
        if now - self._last_ping >= self.watchdog_seconds / 2:
            self._last_ping = now
            self.notify("WATCHDOG=1")

    def status(self, text: str) -> None:
        """STATUS=<text>: one line shown by `systemctl status` (e.g. why the daemon is about to exit)."""
        self.notify(f"STATUS={' '.join(text.split())[:200]}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
