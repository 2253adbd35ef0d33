"""The request gate (the daemon's server.http.Gate): who may talk to the daemon, decided
before a peer costs anything, which cached answers a peer may see, and which quota
client (calm_edge.quotas) a peer is."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from calm_edge.config import Settings
from calm_edge.quotas import Client, QuotaError, QuotaTable
from calm_edge.server.access import AccessError, AccessPolicy, Peer, gid_of, group_ids, uid_of
from calm_edge.server.http import Request, Response, error_response

# Routes that change the daemon or what it learns: restricted to admins (server.access).
ADMIN_ROUTES = frozenset({"/calm/models/{name}/{action}", "/calm/budget", "/calm/feedback",
                          "/calm/reload"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "localhost.localdomain"})


def route_label(request: Request, known: Callable[[str, str], bool]) -> str:
    """The path pattern a request is counted and checked under ("other" if unknown)."""
    path = request.path.rstrip("/") or "/"
    if known(request.method, path):
        return path
    if path.startswith("/calm/models/"):
        return "/calm/models/{name}/{action}"
    return "other"


class RequestGate:
    """Refusals at accept and after the head, from the profile's access settings.

    `count(route, status)` is told of every refusal (for /metrics); `label(request)` names
    the route a request is for."""

    def __init__(self, settings: Settings, count: Callable[[str, int], None],
                 label: Callable[[Request], str]) -> None:
        self._count, self._label = count, label
        self.apply(settings)

    def apply(self, settings: Settings) -> None:
        """(Re)configure: at start and on reload. Raises AccessError when an allow-list
        or the quota table names nobody who exists (before anything changed)."""
        srv = settings.profile.server
        access = AccessPolicy.from_names(
            srv.allow_users, srv.allow_groups, srv.admin_groups,
            tcp_unauthenticated=srv.tcp_allow_unauthenticated)
        try:
            self.quotas = QuotaTable.from_config(settings.profile.quotas, uid_of, gid_of)
        except QuotaError as e:
            raise AccessError(f"{settings.profile_source}: {e}") from None
        self.access = access
        self._shared_gids = group_ids("cache.shared_groups",
                                      settings.profile.cache.shared_groups)
        self._tcp_host = srv.tcp.rpartition(":")[0].strip("[]").lower()
        self._tcp_any_ip = srv.tcp_allow_remote  # exposed on purpose: any IP as Host

    def connection(self, peer: Peer | None, tcp: bool) -> Response | None:
        """At accept: peers the allow-lists refuse never get to send a request."""
        refused = self.access.refuse(peer, admin=False)
        if refused is None:
            return None
        self._count("connection", 403)
        return error_response(403, refused, code="forbidden", type_="permission_error")

    def head(self, request: Request) -> Response | None:
        """After the head, before the body: admin routes for non-admins, and over TCP
        what a web page could send (Origin, a foreign Host, a non-JSON POST)."""
        label = self._label(request)
        refused = self._refusal(request, label)
        if refused is not None:
            self._count(label, refused.status)
        return refused

    def _refusal(self, request: Request, label: str) -> Response | None:
        """A browser can reach a loopback TCP port: over TCP, refuse what only a web page
        sends (an Origin header; a Host that is not this machine, i.e. DNS rebinding) and
        POSTs that are not JSON (a cross-site form or text/plain POST needs no preflight).
        Then who may do what (server.access)."""
        h = request.headers
        forbidden: str | None = None
        if request.tcp and "origin" in h:
            forbidden = "requests from web pages (an Origin header) are refused over TCP"
        elif request.tcp and not self._loopback_host(h.get("host", "")):
            forbidden = "the Host header must name this machine (localhost or a loopback " \
                        "address)"
        else:
            forbidden = self.access.refuse(request.peer, admin=label in ADMIN_ROUTES)
        if forbidden is not None:
            return error_response(403, forbidden, code="forbidden", type_="permission_error")
        media = h.get("content-type", "").split(";")[0].strip().lower()
        if request.tcp and request.method == "POST" and media != "application/json":
            return error_response(415, "POST bodies must be Content-Type: application/json",
                                  code="unsupported_media_type")
        return None

    def _loopback_host(self, host: str) -> bool:
        """Whether a Host header names this machine: localhost, a loopback address, the
        address TCP is bound to, or (with tcp_allow_remote) any address literal."""
        name = host.strip().lower()
        if name.startswith("["):
            name = name[1:].partition("]")[0]
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        if not name:
            return False
        if name in _LOOPBACK_NAMES or name == self._tcp_host:
            return True
        try:  # DNS rebinding needs a name: an address literal is never a foreign site
            return ipaddress.ip_address(name).is_loopback or self._tcp_any_ip
        except ValueError:
            return False

    def refuse(self, request: Request, label: str) -> str | None:
        """Why the peer may not use this route (checked again for each request)."""
        return self.access.refuse(request.peer, admin=label in ADMIN_ROUTES)

    def is_admin(self, peer: Peer | None) -> bool:
        return self.access.is_admin(peer)

    def client(self, peer: Peer | None, remote: str | None = None) -> Client:
        """The quota client a peer is (by uid and groups; by address over TCP)."""
        if peer is None:
            return self.quotas.client_for(None, address=remote)
        return self.quotas.client_for(peer.uid, peer.groups)

    def cache_scope(self, peer: Peer | None, client: Client | None = None,
                    remote: str | None = None) -> str:
        """Whose cached answers a peer may be given: its own when its quota entry marks
        its cache private (its uid; its address over TCP), else those of a shared group
        it is in (cache.shared_groups, in their order), else its own uid's. TCP peers,
        who have no credentials, otherwise share one scope."""
        private = client is not None and client.limits.private_cache
        if peer is None:
            return f"tcp:{remote or '?'}" if private else "tcp"
        if private:
            return f"uid:{peer.uid}"
        for gid in self._shared_gids:
            if gid in peer.groups:
                return f"gid:{gid}"
        return f"uid:{peer.uid}"
