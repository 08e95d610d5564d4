"""systemd integration without a dependency: sd_notify and journal logging.

sd_notify(3) is one datagram on the AF_UNIX socket named by $NOTIFY_SOCKET
(a path, or '@name' for the abstract namespace) carrying newline-separated
assignments. We send:

* `STATUS=...` while starting (the BPF compile can take a while) and once serving;
* `READY=1` when the control sockets are bound, the data plane is attached
  and the API answers (the same moment `up` prints `ready`);
* `WATCHDOG=1` every WATCHDOG_USEC/2 from the event loop, so a stuck loop
  stops the pings and systemd restarts the daemon (WatchdogSec=);
* `STOPPING=1` when a stop begins.

Without NOTIFY_SOCKET every call is a no-op. A failing send is logged once
and never stops the daemon.

Journal: under systemd, stderr is a stream to journald and $JOURNAL_STREAM
names its device:inode. Then log lines carry no timestamp (the journal adds
its own) and start with the syslog priority `<N>`, so `journalctl -p warning`
works (journald's SyslogLevelPrefix=, on by default).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

log = logging.getLogger("lispctl.daemon")

JOURNAL_FORMAT = "%(name)s: %(message)s"


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_usec / 1e6 if watchdog_usec else None
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._failed = False
        self.sent = 0

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "Notifier":
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec = None
        text = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID, when given, says which process the watchdog is for.
        if text.isdigit() and int(text) > 0 and (not pid or pid == str(os.getpid())):
            usec = int(text)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        if self.address is None:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(assignments).encode(), target)
        except OSError as exc:
            if not self._failed:
                log.warning("sd_notify to %s failed: %s", self.address, exc)
                self._failed = True
            return False
        self.sent += 1
        return True

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def ready(self, status: str) -> None:
        """READY=1, then watchdog pings from the running loop (if asked for)."""
        self.notify("READY=1", f"STATUS={status}")
        if self.watchdog_s is not None and self.address is not None:
            self._ping()

    def _ping(self) -> None:
        self.notify("WATCHDOG=1")
        self._timer = asyncio.get_running_loop().call_later(self.watchdog_s / 2, self._ping)

    def stopping(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.notify("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def under_journal(stream=None) -> bool:
    """True when `stream` (stderr) is the journal stream systemd set up."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class JournalFormatter(logging.Formatter):
    """`<priority>name: message`; each extra line of a traceback gets the prefix too,
    so journald keeps the priority for all of them."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prio = next((p for level, p in _PRIORITY if record.levelno >= level), 7)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.split("\n"))
