"""Where things live by default: bundled data, sockets, state and model directories.

Order of preference follows systemd first (RuntimeDirectory=, StateDirectory= set
$RUNTIME_DIRECTORY / $STATE_DIRECTORY), then the system path for root, then the XDG
per-user directories. Every function takes the environment as a Mapping, and the socket
functions take the system socket's path (`system_socket`, default SYSTEM_SOCKET), so tests
can fake what is installed or running on the machine.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

_PKG = Path(__file__).resolve().parent
SYSTEM_SOCKET = Path("/run/calm-edge/calm.sock")


class UnsafeDirectory(RuntimeError):
    """A directory for the socket that another user could control."""


def bundled_dir(kind: str) -> Path:
    """`profiles` or `models` from the source tree (editable install) or the wheel."""
    source_tree = _PKG.parent / kind
    if source_tree.is_dir():
        return source_tree
    return _PKG / "_bundled" / kind


def profile_dirs() -> list[Path]:
    """Profile search path: /etc/calm-edge/profiles (operator overrides), then bundled."""
    return [Path("/etc/calm-edge/profiles"), bundled_dir("profiles")]


def fleet_path(configured: str) -> Path:
    return Path(configured).expanduser() if configured else bundled_dir("models") / "fleet.toml"


def local_fleet_path(configured: str, models_dir: Path) -> Path:
    """The manifest of added models: next to their files unless configured."""
    return Path(configured).expanduser() if configured else models_dir / "fleet.local.toml"


def _first_dir(value: str | None) -> Path | None:
    # systemd joins several directories with ':'; the first is ours.
    return Path(value.split(":")[0]) if value else None


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def state_dir(configured: str, env: Mapping[str, str]) -> Path:
    if configured:
        return Path(configured).expanduser()
    sd = _first_dir(env.get("STATE_DIRECTORY"))
    if sd:
        return sd
    base = env.get("XDG_STATE_HOME") or str(_home(env) / ".local" / "state")
    return Path(base) / "calm-edge"


def models_dir(configured: str, env: Mapping[str, str]) -> Path:
    if configured:
        return Path(configured).expanduser()
    sd = _first_dir(env.get("STATE_DIRECTORY"))
    if sd:
        return sd / "models"
    base = env.get("XDG_DATA_HOME") or str(_home(env) / ".local" / "share")
    return Path(base) / "calm-edge" / "models"


def fallback_socket_dir() -> Path:
    """The socket's directory for a user without $XDG_RUNTIME_DIR: in /tmp, where anyone
    can create it first. Serve and connect only after `check_private_dir`."""
    return Path(f"/tmp/calm-edge-{os.getuid()}")


def check_private_dir(path: Path) -> None:
    """Raise UnsafeDirectory unless `path` itself (not a link's target) is a directory
    owned by this effective user that neither its group nor others may write."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise UnsafeDirectory(f"{path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{path} is not a directory (a link or a file put there?); "
                              "remove it")
    if st.st_uid != os.geteuid():
        raise UnsafeDirectory(f"{path} belongs to uid {st.st_uid}, not to this user "
                              f"({os.geteuid()}): someone else created it; remove it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeDirectory(f"{path} is writable by its group or others (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}); make it 0700 or remove it")


def make_private_dir(path: Path) -> None:
    """Create `path` with mode 0700 unless it exists (an existing one is never chmod-ed),
    then `check_private_dir` it."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise UnsafeDirectory(f"cannot create {path}: {e.strerror}") from None
    check_private_dir(path)


def _user_socket(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "calm-edge" / "calm.sock"
    return fallback_socket_dir() / "calm.sock"


def server_socket_path(configured: str, env: Mapping[str, str], *,
                       system_socket: Path = SYSTEM_SOCKET) -> Path:
    """Where `serve` binds when no socket is configured."""
    if configured:
        return Path(configured).expanduser()
    rd = _first_dir(env.get("RUNTIME_DIRECTORY"))
    if rd:
        return rd / "calm.sock"
    if os.geteuid() == 0:
        return system_socket
    return _user_socket(env)


def client_socket_path(configured: str | None, env: Mapping[str, str], *,
                       system_socket: Path = SYSTEM_SOCKET) -> Path:
    """Where client commands connect: explicit, $CALM_EDGE_SOCKET, the service's socket
    (`system_socket`) if it exists, else the path a `serve` by this user would bind."""
    if configured:
        return Path(configured).expanduser()
    if env.get("CALM_EDGE_SOCKET"):
        return Path(env["CALM_EDGE_SOCKET"]).expanduser()
    try:
        if system_socket.exists():
            return system_socket
    except PermissionError:  # the service's directory is closed to this user (Python <= 3.11
        return system_socket  # raises here): connecting says so, with the group to join
    return server_socket_path("", env, system_socket=system_socket)
