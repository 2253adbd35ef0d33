"""Where things live by default: bundled data, sockets, state and model directories.

Order of preference follows systemd first (RuntimeDirectory=, StateDirectory= set
$RUNTIME_DIRECTORY / $STATE_DIRECTORY), then the system path for root, then the XDG
per-user directories.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_PKG = Path(__file__).resolve().parent
SYSTEM_SOCKET = Path("/run/calm-edge/calm.sock")


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


def _user_socket(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "calm-edge" / "calm.sock"
    return Path(f"/tmp/calm-edge-{os.getuid()}") / "calm.sock"


def server_socket_path(configured: str, env: Mapping[str, str]) -> Path:
    """Where `serve` binds when no socket is configured."""
    if configured:
        return Path(configured).expanduser()
    rd = _first_dir(env.get("RUNTIME_DIRECTORY"))
    if rd:
        return rd / "calm.sock"
    if os.geteuid() == 0:
        return SYSTEM_SOCKET
    return _user_socket(env)


def client_socket_path(configured: str | None, env: Mapping[str, str]) -> Path:
    """Where client commands connect: explicit, $CALM_EDGE_SOCKET, the service's socket if it
    exists, else the path a `serve` by this user would bind."""
    if configured:
        return Path(configured).expanduser()
    if env.get("CALM_EDGE_SOCKET"):
        return Path(env["CALM_EDGE_SOCKET"]).expanduser()
    if SYSTEM_SOCKET.exists():
        return SYSTEM_SOCKET
    return server_socket_path("", env)
