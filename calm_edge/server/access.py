"""Who may use the socket, and who may administer the daemon.

The socket file's mode and group are the first gate. On top, the peer's credentials, read
once when its connection is accepted (SO_PEERCRED: pid, uid, gid; its groups from
SO_PEERGROUPS, else once from /proc/<pid>/status), are checked against the profile:
`allow_users`/`allow_groups` (empty = anyone who can open the socket) and `admin_groups`
for the admin routes (model load/unload/pin, budget, feedback, reload). root and the
daemon's own user are always allowed and always admins. Peers without credentials (a TCP
listener) may use the API but never the admin routes, and with allow-lists set only if
the profile says so (`tcp_allow_unauthenticated`).

An allow-list that names nobody who exists fails closed: the daemon refuses to start.
"""

from __future__ import annotations

import array
import errno
import grp
import logging
import os
import pwd
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("calm_edge.access")

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; not named by Python
_NGROUPS_MAX = 65536
_FULL_ID_RANGE = (1 << 32) - 1  # what the initial user namespace maps


class AccessError(ValueError):
    """The access settings cannot work (an allow-list that names nobody who exists)."""


@dataclass(frozen=True)
class Peer:
    """A Unix-socket peer's credentials, read once when its connection was accepted (the
    pid may be reused later; uid and groups are what the kernel vouched for then)."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int]  # primary and supplementary


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


def uid_of(name: str) -> int | None:
    """A user's uid (a number is taken as it is), or None if there is no such user."""
    return _uid(name)


def gid_of(name: str) -> int | None:
    """A group's gid (a number is taken as it is), or None if there is no such group."""
    return _gid(name)


def _resolve(field: str, names: Iterable[str], *, by: str) -> frozenset[int]:
    """Ids for `names`; an unknown name is warned about, a list of only unknown names is an
    AccessError (it would otherwise restrict nothing)."""
    names = list(names)
    ids = {n: (_uid(n) if by == "user" else _gid(n)) for n in names}
    unknown = [n for n, i in ids.items() if i is None]
    if names and len(unknown) == len(names):
        raise AccessError(f"server.{field}: no such {by}: {', '.join(unknown)} (the list "
                          "names nobody who exists, so it would admit no one as meant; fix "
                          "or empty it)")
    if unknown:
        log.warning("server.%s: no such %s: %s (ignored)", field, by, ", ".join(unknown))
    return frozenset(i for i in ids.values() if i is not None)


def group_ids(field: str, names: Iterable[str]) -> tuple[int, ...]:
    """Gids for `names`, in order; unknown names are warned about and skipped."""
    out = []
    for name in names:
        gid = _gid(name)
        if gid is None:
            log.warning("%s: no such group: %s (ignored)", field, name)
        else:
            out.append(gid)
    return tuple(out)


def peer_groups(pid: int, gid: int, proc_root: Path = Path("/proc")) -> frozenset[int]:
    """The peer's primary and supplementary groups from /proc (best effort: /proc may be
    hidden). Only for kernels without SO_PEERGROUPS; read once, at accept."""
    groups = {gid}
    try:
        for line in (proc_root / str(pid) / "status").read_text().splitlines():
            if line.startswith("Groups:"):
                groups.update(int(g) for g in line.split()[1:])
                break
    except (OSError, ValueError):
        pass
    return frozenset(groups)


def _so_peergroups(sock: socket.socket) -> list[int] | None:
    """The groups the kernel recorded for the peer at connect(), or None if unsupported."""
    size = 64 * 4
    while True:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as e:
            if e.errno == errno.ERANGE and size < _NGROUPS_MAX * 4:
                size = _NGROUPS_MAX * 4
                continue
            return None
        return list(array.array("I", raw[:len(raw) - len(raw) % 4]))


def read_peer(sock: socket.socket, proc_root: Path = Path("/proc")) -> Peer | None:
    """The credentials of a Unix-socket peer, or None (not a Unix socket, or unavailable).
    Blocking but cheap (getsockopt; a /proc read only without SO_PEERGROUPS)."""
    if getattr(sock, "family", None) != socket.AF_UNIX:
        return None
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is None:  # pragma: no cover - non-Linux
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, gid = struct.unpack("3i", raw)
    groups = _so_peergroups(sock)
    return Peer(pid, uid, gid, frozenset([gid, *groups]) if groups is not None
                else peer_groups(pid, gid, proc_root))


def userns_limits(proc_root: Path = Path("/proc")) -> str | None:
    """Why peer uids and gids may not be what they are outside (a user namespace that maps
    only some ids, as systemd's PrivateUsers=yes does: every other peer shows as 65534),
    or None when this process sees the full id range (or it cannot tell)."""
    for kind in ("uid", "gid"):
        try:
            lines = (proc_root / "self" / f"{kind}_map").read_text().split("\n")
            mapped = sum(int(line.split()[2]) for line in lines if line.strip())
        except (OSError, ValueError, IndexError):
            return None
        if mapped < _FULL_ID_RANGE:
            return (f"this process runs in a user namespace that maps {mapped} {kind}s "
                    "(systemd PrivateUsers=yes?): other peers' ids show as 65534, so "
                    "allow_users/allow_groups/admin_groups can only match root and the "
                    "daemon's own user")
    return None


@dataclass(frozen=True)
class AccessPolicy:
    allow_uids: frozenset[int]
    allow_gids: frozenset[int]
    admin_gids: frozenset[int]
    self_uid: int
    tcp_unauthenticated: bool = False  # serve TCP peers despite allow-lists

    @classmethod
    def from_names(cls, allow_users: Iterable[str], allow_groups: Iterable[str],
                   admin_groups: Iterable[str], self_uid: int | None = None,
                   tcp_unauthenticated: bool = False) -> AccessPolicy:
        """Raises AccessError when an allow-list names only users or groups that do not
        exist. Unknown admin groups admit nobody (closed already): a warning only."""
        admin = list(admin_groups)
        admin_gids = frozenset(g for g in map(_gid, admin) if g is not None)
        return cls(_resolve("allow_users", allow_users, by="user"),
                   _resolve("allow_groups", allow_groups, by="group"), admin_gids,
                   os.geteuid() if self_uid is None else self_uid, tcp_unauthenticated)

    @property
    def restricted(self) -> bool:
        return bool(self.allow_uids or self.allow_gids)

    def refuse(self, peer: Peer | None, admin: bool) -> str | None:
        """Why this peer may not make this request, or None if it may. Pure."""
        if peer is None:  # no credentials (TCP)
            if admin:
                return "admin routes need a Unix-socket peer"
            if self.restricted and not self.tcp_unauthenticated:
                return ("TCP peers have no credentials and allow_users/allow_groups are "
                        "set (server.tcp_allow_unauthenticated)")
            return None
        if peer.uid in (0, self.self_uid):
            return None
        if self.restricted and peer.uid not in self.allow_uids \
                and not peer.groups & self.allow_gids:
            return f"uid {peer.uid} is not allowed to use this daemon (allow_users/allow_groups)"
        if admin and not peer.groups & self.admin_gids:
            return f"uid {peer.uid} is not in an admin group (admin_groups)"
        return None

    def is_admin(self, peer: Peer | None) -> bool:
        return self.refuse(peer, admin=True) is None
