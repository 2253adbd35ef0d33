"""Who may use the socket, and who may administer the daemon.

The socket file's mode and group are the first gate. On top, the peer's credentials
(SO_PEERCRED: pid, uid, gid, plus its supplementary groups from /proc/<pid>/status) are
checked against the profile: `allow_users`/`allow_groups` (empty = anyone who can open the
socket) and `admin_groups` for the admin routes (model load/unload/pin, budget, feedback,
reload). root and the daemon's own user are always allowed and always admins. Peers
without credentials (a TCP listener) may use the API but never the admin routes.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _uid(name: str) -> int | None:
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _gid(name: str) -> int | None:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def peer_groups(pid: int, gid: int, proc_root: Path = Path("/proc")) -> set[int]:
    """The peer's primary and supplementary groups (best effort: /proc may be hidden)."""
    groups = {gid}
    try:
        for line in (proc_root / str(pid) / "status").read_text().splitlines():
            if line.startswith("Groups:"):
                groups.update(int(g) for g in line.split()[1:])
                break
    except (OSError, ValueError):
        pass
    return groups


@dataclass(frozen=True)
class AccessPolicy:
    allow_uids: frozenset[int]
    allow_gids: frozenset[int]
    admin_gids: frozenset[int]
    self_uid: int
    proc_root: Path = Path("/proc")

    @classmethod
    def from_names(cls, allow_users: Iterable[str], allow_groups: Iterable[str],
                   admin_groups: Iterable[str], self_uid: int | None = None,
                   proc_root: Path = Path("/proc")) -> AccessPolicy:
        """Unknown names are ignored (a group that does not exist admits nobody)."""
        return cls(frozenset(u for u in map(_uid, allow_users) if u is not None),
                   frozenset(g for g in map(_gid, allow_groups) if g is not None),
                   frozenset(g for g in map(_gid, admin_groups) if g is not None),
                   os.geteuid() if self_uid is None else self_uid, proc_root)

    @property
    def restricted(self) -> bool:
        return bool(self.allow_uids or self.allow_gids)

    def refuse(self, peer: Any, admin: bool) -> str | None:
        """Why this peer may not make this request, or None if it may."""
        if peer is None:  # no credentials (TCP)
            return "admin routes need a Unix-socket peer" if admin else None
        pid, uid, gid = peer
        if uid in (0, self.self_uid):
            return None
        groups = peer_groups(pid, gid, self.proc_root)
        if self.restricted and uid not in self.allow_uids and not groups & self.allow_gids:
            return f"uid {uid} is not allowed to use this daemon (allow_users/allow_groups)"
        if admin and not groups & self.admin_gids:
            return f"uid {uid} is not in an admin group (admin_groups)"
        return None
