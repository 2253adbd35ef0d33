"""A decoy daemon: listens where a daemon installed or running on the machine would (the
system socket, $CALM_EDGE_SOCKET, $XDG_RUNTIME_DIR/calm-edge/calm.sock), records every
client that connects, answers 503 naming itself, and hangs up. Tests put one there to
prove that no test's client reaches a daemon it did not start.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import stat
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType


@dataclass(frozen=True)
class DecoyVisit:
    """One connection to a decoy. `command` is the client's /proc/<pid>/cmdline ("" when
    unreadable); `request_line` the first line it sent ("" when it sent nothing)."""

    path: Path
    pid: int
    uid: int
    command: str
    request_line: str

    def describe(self) -> str:
        what = self.request_line or "connected and sent nothing"
        return f"{self.path}: pid {self.pid} uid {self.uid} ({self.command}): {what}"


def _peer(conn: socket.socket) -> tuple[int, int]:
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid, uid


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def _live(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


class Decoy:
    """Listens on `paths` between start() (or `with`) and close(). A path where something
    else lives (a live daemon, a file that is no socket) is left alone and listed in
    `occupied`; a stale socket file is replaced. Sockets are made 0666 and the parent
    directories it creates 0755, so another user's client is recorded too; close() removes
    what it created. Thread-safe: `visits` is a snapshot."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self.watched: list[Path] = []
        self.occupied: list[Path] = []
        self._visits: list[DecoyVisit] = []
        self._lock = threading.Lock()
        self._created_dirs: list[Path] = []
        self._listeners: dict[socket.socket, Path] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="decoy", daemon=True)

    @property
    def visits(self) -> list[DecoyVisit]:
        with self._lock:
            return list(self._visits)

    def start(self) -> Decoy:
        try:
            for path in self.paths:
                self._listen(path)
        except BaseException:
            self.close()
            raise
        self._thread.start()
        return self

    def _listen(self, path: Path) -> None:
        if path.is_symlink() or path.exists():
            if not stat.S_ISSOCK(path.lstat().st_mode) or _live(path):
                self.occupied.append(path)
                return
            path.unlink()  # stale: left by a daemon that died
        missing = [d for d in [path.parent, *path.parent.parents] if not d.exists()]
        for d in reversed(missing):
            d.mkdir(mode=0o755)
            self._created_dirs.append(d)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            path.chmod(0o666)
            sock.listen(16)
        except BaseException:
            sock.close()
            raise
        self._listeners[sock] = path
        self.watched.append(path)

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            for sock in self._listeners:
                sel.register(sock, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    listener = key.fileobj
                    assert isinstance(listener, socket.socket)
                    self._visit(listener, self._listeners[listener])

    def _visit(self, listener: socket.socket, path: Path) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                pid, uid = _peer(conn)
                conn.settimeout(1.0)
                try:
                    head = conn.recv(4096)
                except OSError:
                    head = b""
                line = head.split(b"\r\n", 1)[0].decode(errors="replace")
                with self._lock:
                    self._visits.append(DecoyVisit(path, pid, uid, _command(pid), line))
                body = json.dumps({"error": {
                    "message": f"calm-edge test decoy at {path}: a test's client reached a "
                               "daemon it did not start", "type": "decoy", "param": None,
                    "code": "decoy"}}).encode()
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                             b"application/json\r\nConnection: close\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass  # the client left first: its visit is recorded when its pid was read

    def close(self) -> None:
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join(10)
        for sock, path in self._listeners.items():
            sock.close()
            with contextlib.suppress(OSError):
                path.unlink()
        self._listeners.clear()
        for d in reversed(self._created_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()
        self._created_dirs.clear()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Decoy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def outer_daemon_sockets(env: Mapping[str, str], extra: str = "") -> list[Path]:
    """Where a client run from `env` would find a daemon this process did not start:
    $CALM_EDGE_SOCKET, $XDG_RUNTIME_DIR/calm-edge/calm.sock, $RUNTIME_DIRECTORY/calm.sock,
    plus the ':'-separated paths in `extra` (e.g. the system socket)."""
    found: list[Path] = []
    if env.get("CALM_EDGE_SOCKET"):
        found.append(Path(env["CALM_EDGE_SOCKET"]).expanduser())
    if env.get("XDG_RUNTIME_DIR"):
        found.append(Path(env["XDG_RUNTIME_DIR"]) / "calm-edge" / "calm.sock")
    if env.get("RUNTIME_DIRECTORY"):
        found.append(Path(env["RUNTIME_DIRECTORY"].split(":")[0]) / "calm.sock")
    found += [Path(p) for p in extra.split(":") if p]
    return list(dict.fromkeys(found))
