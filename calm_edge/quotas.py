"""Per-client quotas: who a peer is for the quota table, and what it has used. Pure.

A *client* is what the profile's `[quotas]` table names: a user (uid), a group (its
members together) or a TCP address or network; every peer the table does not name is a
client of its own (its uid, or its TCP address) under `[quotas.default]`. Each client has
a weight (its share of generation time when clients compete), a priority, limits per
minute (generated tokens, seconds of generation), a maximum share of the queue, a mode
ceiling, and whether its cached answers are private.

Nothing here has state or a clock: `QuotaTable.client_for` maps an identity to a `Client`,
`charge` folds one finished generation into a `Usage` value, `over_quota` says whether a
new request may be admitted (and if not, which quota, and when to retry). The scheduler is
the one owner of each client's `Usage` (and of queue order, where fair sharing uses the
weights); the request gate owns the table. No I/O, no logging: name lookups are injected.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass

from calm_edge.config import MODE_LADDER, QuotaLimits, QuotasConfig

WINDOW_S = 60.0   # the per-minute quotas look back this far
BUCKET_S = 1.0    # usage is kept in buckets of this width (at most 61 per client)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def cap_mode(mode: str, ceiling: str) -> str:
    """`mode`, or `ceiling` when `mode` spends more of the board (MODE_LADDER). An empty
    ceiling caps nothing."""
    if not ceiling or mode not in MODE_LADDER:
        return mode
    return ceiling if MODE_LADDER.index(mode) > MODE_LADDER.index(ceiling) else mode


@dataclass(frozen=True)
class Limits:
    """One client's quota, resolved. Zero limits mean none; `priority` None: requests keep
    their own (quotas off)."""

    weight: float = 1.0
    priority: int | None = None
    tokens_per_min: int = 0
    gen_s_per_min: float = 0.0
    max_queue_share: float = 1.0
    max_mode: str = ""
    private_cache: bool = False

    @classmethod
    def of(cls, q: QuotaLimits) -> Limits:
        return cls(q.weight, q.priority, q.tokens_per_min, q.gen_s_per_min, q.max_queue_share,
                   q.max_mode, q.private_cache)

    def to_status(self) -> dict[str, object]:
        return {"weight": self.weight, "priority": self.priority,
                "tokens_per_min": self.tokens_per_min or None,
                "gen_s_per_min": self.gen_s_per_min or None,
                "max_queue_share": self.max_queue_share, "max_mode": self.max_mode or None,
                "private_cache": self.private_cache}


NO_LIMITS = Limits()


@dataclass(frozen=True)
class Client:
    """Whose request this is, for accounting and fair sharing."""

    key: str        # whose usage: "user:logger", "group:robots", "uid:1000", "tcp:10.0.0.5"
    name: str       # shown in status and refusals
    limits: Limits = NO_LIMITS
    field: str = "quotas.default"  # the profile table the limits come from


ANONYMOUS = Client("internal", "the daemon itself")  # admin loads by hand, calibration


@dataclass(frozen=True)
class _Rule:
    kind: str                      # "user" | "group" | "tcp"
    ids: frozenset[int]            # the uid or gid
    network: IpNetwork | None
    client: Client


class QuotaError(ValueError):
    """The table names someone who cannot be found (the profile check missed it)."""


@dataclass(frozen=True)
class QuotaTable:
    enabled: bool = False
    rules: tuple[_Rule, ...] = ()
    default: Limits = NO_LIMITS

    @classmethod
    def from_config(cls, cfg: QuotasConfig, uid_of: Callable[[str], int | None],
                    gid_of: Callable[[str], int | None]) -> QuotaTable:
        """Resolve names to ids with the given lookups. Raises QuotaError naming the field
        when a name no longer resolves (the profile load checked it existed). Off: no
        rules, no limits."""
        if not cfg.enabled:
            return cls()
        rules: list[_Rule] = []
        for i, c in enumerate(cfg.client):
            where = f"quotas.client[{i}]"
            limits = Limits.of(c)
            if c.tcp:
                net = ipaddress.ip_network(c.tcp, strict=False)
                rules.append(_Rule("tcp", frozenset(), net, Client(
                    f"tcp:{net}", c.name or f"tcp {net}", limits, where)))
                continue
            kind, name = ("user", c.user) if c.user else ("group", c.group)
            ident = (uid_of if kind == "user" else gid_of)(name)
            if ident is None:
                raise QuotaError(f"[{where}] {kind}: no such {kind}: {name!r}")
            rules.append(_Rule(kind, frozenset({ident}), None, Client(
                f"{kind}:{ident}", c.name or f"{kind} {name}", limits, where)))
        order = {"user": 0, "group": 1, "tcp": 2}  # stable: table order within a kind
        return cls(True, tuple(sorted(rules, key=lambda r: order[r.kind])),
                   Limits.of(cfg.default))

    @property
    def names_peers(self) -> bool:
        """Some entry is for a user or a group (a user namespace can hide their ids)."""
        return any(r.kind != "tcp" for r in self.rules)

    def client_for(self, uid: int | None, groups: frozenset[int] = frozenset(),
                   address: str | None = None) -> Client:
        """The client a peer is: its user's entry, else its first group's (table order),
        else (over TCP) the first entry whose network holds its address, else itself
        under the defaults. `uid` None: a TCP peer (or no credentials)."""
        ip = _ip(address) if uid is None else None
        for r in self.rules:
            if (r.kind == "user" and uid in r.ids) or (r.kind == "group" and uid is not None
                                                       and groups & r.ids) \
                    or (r.kind == "tcp" and ip is not None and r.network is not None
                        and ip.version == r.network.version and ip in r.network):
                return r.client
        if uid is not None:
            return Client(f"uid:{uid}", f"uid {uid}", self.default)
        who = address or "?"
        return Client(f"tcp:{who}", f"tcp {who}", self.default)


def _ip(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


# -- usage --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Usage:
    """What a client used: per-second buckets of the last minute, and totals since start."""

    buckets: tuple[tuple[float, int, float], ...] = ()  # (start_s, tokens, gen_s), oldest first
    requests: int = 0
    tokens: int = 0
    gen_s: float = 0.0


def _live(u: Usage, now_s: float) -> tuple[tuple[float, int, float], ...]:
    """The buckets still inside the window ending at `now_s` (a bucket partly inside
    counts whole: the limits err on the strict side by at most a second)."""
    return tuple(b for b in u.buckets if b[0] + BUCKET_S > now_s - WINDOW_S)


def charge(u: Usage, now_s: float, tokens: int, gen_s: float) -> Usage:
    """`u` with one finished generation added at `now_s` (seconds on the scheduler's
    clock): `tokens` generated, `gen_s` of a lane held."""
    start = math.floor(now_s / BUCKET_S) * BUCKET_S
    live = _live(u, now_s)
    if live and live[-1][0] == start:
        _, t, g = live[-1]
        live = (*live[:-1], (start, t + tokens, g + gen_s))
    else:
        live = (*live, (start, tokens, gen_s))
    return Usage(live, u.requests + 1, u.tokens + tokens, u.gen_s + gen_s)


def windowed(u: Usage, now_s: float) -> tuple[int, float]:
    """(tokens, generation seconds) in the last minute."""
    live = _live(u, now_s)
    return sum(b[1] for b in live), sum(b[2] for b in live)


def _retry_s(u: Usage, now_s: float, used: float, limit: float, column: int) -> float:
    """Seconds until the window's usage falls under `limit`, as its buckets age out (a
    full window when the running generations alone are over it)."""
    for b in _live(u, now_s):
        used -= b[column]
        if used < limit:
            return max(b[0] + BUCKET_S + WINDOW_S - now_s, 0.0)
    return WINDOW_S


@dataclass(frozen=True)
class QuotaRefusal:
    quota: str          # "tokens_per_min" | "gen_s_per_min" | "max_queue_share"
    field: str          # the profile field, e.g. "quotas.client[1].tokens_per_min"
    message: str
    retry_after_s: float


def over_quota(client: Client, usage: Usage, now_s: float, *, running_tokens: int = 0,
               running_gen_s: float = 0.0, waiting: int = 0, capacity: int = 0,
               queue_retry_s: float = 1.0) -> QuotaRefusal | None:
    """Why a new request of `client` may not join the queue now, or None. `running_*` is
    what its generations in progress used so far; `waiting` its requests in the queue, of
    `capacity` places; `queue_retry_s` the scheduler's estimate of when a place frees."""
    lim, who = client.limits, f"client {client.name!r}"
    window_tokens, window_gen_s = windowed(usage, now_s) \
        if lim.tokens_per_min or lim.gen_s_per_min else (0, 0.0)
    if lim.tokens_per_min:
        used = window_tokens + running_tokens
        if used >= lim.tokens_per_min:
            retry = _retry_s(usage, now_s, used, lim.tokens_per_min, 1)
            return QuotaRefusal("tokens_per_min", f"{client.field}.tokens_per_min",
                                f"{who} is over its quota of {lim.tokens_per_min} generated "
                                f"tokens per minute ({client.field}.tokens_per_min): {used} "
                                f"in the last {WINDOW_S:.0f} s; retry in "
                                f"{math.ceil(max(retry, 1))}s", retry)
    if lim.gen_s_per_min:
        spent = window_gen_s + running_gen_s
        if spent >= lim.gen_s_per_min:
            retry = _retry_s(usage, now_s, spent, lim.gen_s_per_min, 2)
            return QuotaRefusal("gen_s_per_min", f"{client.field}.gen_s_per_min",
                                f"{who} is over its quota of {lim.gen_s_per_min:g} s of "
                                f"generation per minute ({client.field}.gen_s_per_min): "
                                f"{spent:.1f} s in the last {WINDOW_S:.0f} s; retry in "
                                f"{math.ceil(max(retry, 1))}s", retry)
    if lim.max_queue_share < 1.0 and capacity > 0:
        places = max(1, math.floor(lim.max_queue_share * capacity))
        if waiting >= places:
            return QuotaRefusal("max_queue_share", f"{client.field}.max_queue_share",
                                f"{who} already has {waiting} requests waiting, its share of "
                                f"the queue ({client.field}.max_queue_share = "
                                f"{lim.max_queue_share:g} of {capacity} places); retry in "
                                f"{math.ceil(max(queue_retry_s, 1))}s", queue_retry_s)
    return None


__all__ = ["ANONYMOUS", "BUCKET_S", "NO_LIMITS", "WINDOW_S", "Client", "Limits", "QuotaError",
           "QuotaRefusal", "QuotaTable", "Usage", "cap_mode", "charge", "over_quota",
           "windowed"]
