"""Sockets and signals of `calm-edge serve`: the Unix socket (or the one systemd passed),
the optional TCP listener, and the signal handlers (restored on exit)."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import ipaddress
import logging
import os
import signal
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from calm_edge import paths

log = logging.getLogger("calm_edge.daemon")

_SUN_PATH_MAX = 107


class DaemonError(RuntimeError):
    """The daemon cannot start; the message says why and what to do."""


def bind_unix_socket(path: Path, mode: int, group: str) -> socket.socket:
    """Bind a listening Unix socket at `path` with `mode`, owned by `group` if it exists.

    A stale socket file (nobody listening) is replaced; a live one is an error. In the
    fallback directory under /tmp, only a private one (made 0700 by us, owned by us) is
    used. The mode comes from the umask at bind; nothing is changed through a link.
    """
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise DaemonError(f"socket path too long ({len(os.fsencode(path))} bytes, max "
                          f"{_SUN_PATH_MAX}): {path}")
    if path.parent == paths.fallback_socket_dir():
        try:
            paths.make_private_dir(path.parent)
        except paths.UnsafeDirectory as e:
            raise DaemonError(f"refusing to serve: {e}") from None
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise DaemonError(f"{path} exists and is not a socket; remove it or choose another "
                              "--socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: left behind by a daemon that died
        else:
            raise DaemonError(f"another daemon is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)  # no window where the socket is wider than `mode`
    try:
        sock.bind(str(path))
    except OSError as e:
        sock.close()
        raise DaemonError(f"cannot bind {path}: {e.strerror}") from None
    finally:
        os.umask(old_umask)
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            log.debug("group %s does not exist; socket keeps our group", group)
        else:
            with contextlib.suppress(PermissionError):
                os.chown(path, -1, gid, follow_symlinks=False)
    sock.listen(128)
    return sock


@contextlib.contextmanager
def capture_signals(loop: asyncio.AbstractEventLoop, handler: Callable[[int], None],
                    on_hup: Callable[[], object] | None = None) -> Iterator[None]:
    """SIGTERM/SIGINT call `handler`, SIGHUP calls `on_hup`. On exit the process is
    stopping: SIGTERM and SIGINT are ignored from then on (a late one would otherwise kill
    it with the default action between "stopped" and the exit; SIGKILL still works)."""
    sigs = (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
        loop.add_signal_handler(sig, handler, sig)
    if on_hup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        yield
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        if on_hup is not None:
            loop.remove_signal_handler(signal.SIGHUP)


def bind_tcp(spec: str, allow_remote: bool) -> socket.socket:
    """A listening TCP socket for "host:port". Only loopback addresses unless allow_remote
    (the API has no authentication of its own)."""
    host, sep, port_text = spec.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536 or not host:
        raise DaemonError(f"server.tcp: expected host:port, got {spec!r}")
    try:
        infos = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM,
                                   flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        raise DaemonError(f"server.tcp: {host!r} is not a numeric IP address") from None
    family, _, _, _, addr = infos[0]
    if not ipaddress.ip_address(addr[0]).is_loopback and not allow_remote:
        raise DaemonError(f"server.tcp: {host} is not a loopback address; the API has no "
                          "authentication over TCP. Set server.tcp_allow_remote = true "
                          "(or --tcp-allow-remote) if you really mean to expose it")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise DaemonError(f"cannot bind TCP {spec}: {e.strerror}") from None
    sock.listen(128)
    return sock
