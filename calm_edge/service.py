"""systemd integration without python-systemd: sd_notify, the watchdog, socket activation.

- `Notifier` speaks sd_notify(3): one datagram of `KEY=VALUE` lines to `$NOTIFY_SOCKET`.
- `watchdog_interval_s` reads `$WATCHDOG_USEC`/`$WATCHDOG_PID` like sd_watchdog_enabled(3).
- `heartbeat` is the asyncio task that pings the watchdog and refreshes `STATUS=`.
- `listen_fds` takes the sockets systemd passed (sd_listen_fds_with_names(3)).

Every function takes the environment as a Mapping; nothing here reads `os.environ`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, NamedTuple

log = logging.getLogger("calm_edge.service")

SD_LISTEN_FDS_START = 3
LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_STATUS_MAX_CHARS = 240


class ActivationError(RuntimeError):
    """The file descriptors systemd passed cannot be served on; the message says why."""


class PassedSocket(NamedTuple):
    sock: socket.socket
    name: str  # FileDescriptorName= of the socket unit; systemd's default: the unit name


def notify_address(value: str) -> bytes | None:
    """The sendto() address for a `$NOTIFY_SOCKET` value; None if unset or unsupported.

    '/path' is a filesystem socket, '@name' an abstract one (a leading NUL byte). Other
    forms (a relative path, 'vsock:...') are not supported.
    """
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None


class Notifier:
    """sd_notify(3) client for `$NOTIFY_SOCKET`.

    Contract: never raises and never blocks, so the daemon can call it from its event loop
    at any point. Without `NOTIFY_SOCKET` (not run by systemd, or `Type=simple`) every call
    is a no-op returning False. A failed send (systemd gone, the receive queue full) is
    logged once at WARNING, later ones at DEBUG, and returns False: the daemon carries on;
    systemd's start and watchdog timeouts are the backstop. Call from one thread (the loop).
    """

    def __init__(self, env: Mapping[str, str], *,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = notify_address(raw)
        self._clock_ns = clock_ns  # CLOCK_MONOTONIC, as MONOTONIC_USEC= requires
        self._sock: socket.socket | None = None
        self._warned = False
        if raw and self._address is None:
            log.warning("NOTIFY_SOCKET=%r is not a supported address; not notifying systemd",
                        raw)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` assignments as one datagram; True if the kernel took it."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode()
        try:
            if self._sock is None:
                # Non-blocking: a full receive queue drops the message instead of stalling
                # the event loop. Close-on-exec: children must not inherit it.
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._sock.sendto(payload, self._address)
        except OSError as e:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "sd_notify to %r failed: %s (further failures are logged at DEBUG)",
                    self._address, e)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up finished: systemd moves the unit to 'active' and starts the watchdog."""
        return self.notify("READY=1", *_status_field(status))

    def status(self, text: str) -> bool:
        return self.notify(*_status_field(text))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *_status_field(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload began; send `ready()` when it is done. `MONOTONIC_USEC=` is what
        `Type=notify-reload` (systemd >= 253) requires to tell this reload from a stale one."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={self._clock_ns() // 1000}",
                           *_status_field(status))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_field(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    # One line: a newline would start a new assignment in the datagram.
    one_line = " ".join(text.split())
    if len(one_line) > _STATUS_MAX_CHARS:
        one_line = one_line[:_STATUS_MAX_CHARS - 3] + "..."
    return (f"STATUS={one_line}",)


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """The watchdog timeout in seconds if systemd expects pings from process `pid`, else
    None. Like sd_watchdog_enabled(3): `WATCHDOG_USEC` must be a positive integer, and
    `WATCHDOG_PID`, when set, must name `pid`. Ping at half this interval."""
    wd_pid = env.get("WATCHDOG_PID")
    if wd_pid is not None and wd_pid != str(pid):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


async def heartbeat(notifier: Notifier, status: Callable[[], str], *,
                    watchdog_s: float | None, status_every_s: float) -> None:
    """Run until cancelled, on the daemon's event loop: send `WATCHDOG=1` every
    `watchdog_s / 2` seconds (when a watchdog is set) and `STATUS=<status()>` when the text
    changed, checked at every wake-up (`watchdog_s / 2`, or `status_every_s` if shorter or
    without a watchdog).

    The pings come from this task on purpose: when the loop stops making progress (a
    blocking call, a busy callback) the pings stop and systemd restarts the service.
    `status` runs on the loop, so it must be cheap and must not block; if it raises, the
    error is logged once and the pings go on.
    """
    if not notifier.enabled:
        return
    period_s = min(watchdog_s / 2 if watchdog_s else math.inf, status_every_s)
    last_status: str | None = None
    status_failed = False
    while True:
        fields = ["WATCHDOG=1"] if watchdog_s else []
        try:
            text = status()
        except Exception:
            if not status_failed:
                log.exception("building the service status failed; watchdog pings go on")
            status_failed = True
        else:
            if text != last_status:
                fields += _status_field(text)
                last_status = text
        notifier.notify(*fields)
        await asyncio.sleep(period_s)


def format_status(resident: Sequence[str], last: Mapping[str, Any] | None, *,
                  in_flight: int = 0, stopping: bool = False) -> str:
    """One STATUS= line: state, resident models, the last routing decision. Pure."""
    head = f"draining {in_flight} in flight" if stopping else \
        f"serving, {in_flight} in flight"
    parts = [head, f"resident: {', '.join(resident) or 'none'}"]
    if last:
        parts.append(f"last: {last.get('chosen', '?')} for {last.get('domain', '?')} "
                     f"({last.get('reason', '')})")
    return "; ".join(parts)


def listen_fds(env: Mapping[str, str], pid: int, *,
               unset_env: MutableMapping[str, str] | None = None,
               first_fd: int = SD_LISTEN_FDS_START) -> list[PassedSocket]:
    """The sockets systemd passed to process `pid` (socket activation), in fd order.

    Like sd_listen_fds_with_names(3): empty unless `LISTEN_PID` names `pid`; `LISTEN_FDS`
    sockets from fd 3; names from `LISTEN_FDNAMES` (colon-separated; "unknown" when absent
    or not one per fd). `LISTEN_*` are removed from `unset_env` (pass `os.environ`) in every
    case, so child processes do not inherit them. Each returned socket is non-blocking and
    close-on-exec, and owned by the caller.

    calm-edge serves HTTP on a listening Unix stream socket only: any other passed fd (a
    TCP socket, or a connection from `Accept=yes`) raises ActivationError.
    """
    try:
        if env.get("LISTEN_PID") != str(pid):
            return []
        raw = env.get("LISTEN_FDS", "")
        try:
            count = int(raw)
        except ValueError:
            raise ActivationError(f"LISTEN_FDS={raw!r} is not a number of sockets") from None
        if count <= 0:
            return []
        names = env.get("LISTEN_FDNAMES", "").split(":") if "LISTEN_FDNAMES" in env else []
        if names and len(names) != count:
            log.warning("LISTEN_FDNAMES names %d sockets, LISTEN_FDS says %d; ignoring the "
                        "names", len(names), count)
        if len(names) != count:
            names = ["unknown"] * count
        return [_adopt(first_fd + i, names[i]) for i in range(count)]
    finally:
        if unset_env is not None:
            for var in LISTEN_VARS:
                unset_env.pop(var, None)


def _adopt(fd: int, name: str) -> PassedSocket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise ActivationError(f"fd {fd} ({name}) passed by systemd is not a socket: "
                              f"{e.strerror}") from None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:  # pragma: no cover - every Linux socket answers SO_ACCEPTCONN
        listening = 0
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        kind = (f"{getattr(sock.family, 'name', sock.family)}/"
                f"{getattr(sock.type, 'name', sock.type)}{'' if listening else ', not listening'}")
        sock.close()  # our duplicate only; systemd keeps its own
        raise ActivationError(f"fd {fd} ({name}) passed by systemd is a {kind} socket; "
                              "calm-edge needs a listening Unix stream socket "
                              "(ListenStream=/path, Accept=no)")
    sock.setblocking(False)
    sock.set_inheritable(False)
    return PassedSocket(sock, name)


__all__ = [
    "LISTEN_VARS", "SD_LISTEN_FDS_START", "ActivationError", "Notifier", "PassedSocket",
    "format_status", "heartbeat", "listen_fds", "notify_address", "watchdog_interval_s",
]
