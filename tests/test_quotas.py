"""Per-client quotas (issue 18 item 3): the pure accounting as table tests, the profile
table's checks, fair sharing in the scheduler with fake clients and a fake clock, and
through the daemon: 429 naming the quota for an over-quota uid (a forked client of another
uid, as root) or TCP address, the mode ceiling, usage in status, private cache scopes."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from calm_edge import top
from calm_edge.cli import _print_clients
from calm_edge.config import (
    ConfigError,
    QuotaClient,
    QuotaLimits,
    QuotasConfig,
    RuntimeConfig,
    Settings,
    load_settings,
    profile_from_mapping,
)
from calm_edge.fleet import load_fleet
from calm_edge.quotas import (
    Client,
    Limits,
    QuotaError,
    QuotaTable,
    Usage,
    cap_mode,
    charge,
    over_quota,
    windowed,
)
from calm_edge.residency import Residency
from calm_edge.scheduler import Lease, OverQuota, Scheduler
from calm_edge.server.access import Peer
from calm_edge.testing.fakes import FakeFactory
from tests.conftest import run_daemon, uds_client, write_profile
from tests.test_hardening import _as_user, _free_port, http, raw_request

CHAT = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 200, "calm": {"cache": False}}


# -- the pure parts -------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "ceiling", "out"), [
    ("quality", "eco", "eco"), ("balanced", "fast", "fast"), ("fast", "balanced", "fast"),
    ("eco", "quality", "eco"), ("quality", "", "quality"), ("eco", "eco", "eco"),
])
def test_quotas_cap_mode_on_the_ladder(mode: str, ceiling: str, out: str) -> None:
    assert cap_mode(mode, ceiling) == out


def test_quotas_charge_keeps_a_sliding_minute_and_totals() -> None:
    u = Usage()
    u = charge(u, 100.2, 10, 1.0)
    u = charge(u, 100.7, 5, 0.5)          # same one-second bucket
    u = charge(u, 130.0, 20, 2.0)
    assert len(u.buckets) == 2 and u.buckets[0] == (100.0, 15, 1.5)
    assert windowed(u, 140.0) == (35, 3.5)
    assert windowed(u, 160.5) == (35, 3.5)  # the bucket [100, 101) still overlaps
    assert windowed(u, 161.0) == (20, 2.0)
    assert windowed(u, 200.0) == (0, 0.0)
    u = charge(u, 200.0, 1, 0.1)          # old buckets are dropped as it goes
    assert [b[0] for b in u.buckets] == [200.0]
    assert (u.requests, u.tokens) == (4, 36) and u.gen_s == pytest.approx(3.6)


def _client(**limits: Any) -> Client:
    return Client("user:7", "logger", Limits(**limits), "quotas.client[2]")


_USED = charge(charge(Usage(), 10.0, 60, 6.0), 40.0, 50, 5.0)  # 110 tokens, 11 s


@pytest.mark.parametrize(("limits", "now", "state", "quota", "retry_s"), [
    ({}, 45.0, {}, None, None),                                    # no limits
    ({"tokens_per_min": 200}, 45.0, {}, None, None),               # under
    ({"tokens_per_min": 110}, 45.0, {}, "tokens_per_min", 26.0),   # at it: the 10 s bucket
    ({"tokens_per_min": 100}, 45.0, {}, "tokens_per_min", 26.0),   # ... must age out
    ({"tokens_per_min": 40}, 45.0, {}, "tokens_per_min", 56.0),    # both must
    ({"tokens_per_min": 100}, 71.0, {}, None, None),               # it did
    ({"tokens_per_min": 150}, 45.0, {"running_tokens": 40}, "tokens_per_min", 26.0),
    ({"gen_s_per_min": 12.0}, 45.0, {}, None, None),
    ({"gen_s_per_min": 10.0}, 45.0, {}, "gen_s_per_min", 26.0),
    ({"gen_s_per_min": 12.0}, 45.0, {"running_gen_s": 2.0}, "gen_s_per_min", 26.0),
    ({"gen_s_per_min": 1.0}, 45.0, {"running_gen_s": 5.0}, "gen_s_per_min", 60.0),
    ({"max_queue_share": 0.25}, 45.0, {"waiting": 1, "capacity": 8}, None, None),
    ({"max_queue_share": 0.25}, 45.0, {"waiting": 2, "capacity": 8}, "max_queue_share", 3.0),
    ({"max_queue_share": 0.0}, 45.0, {"waiting": 0, "capacity": 8}, None, None),  # one place
    ({"max_queue_share": 0.0}, 45.0, {"waiting": 1, "capacity": 8}, "max_queue_share", 3.0),
])
def test_quotas_over_quota_table(limits: dict[str, Any], now: float, state: dict[str, Any],
                                 quota: str | None, retry_s: float | None) -> None:
    got = over_quota(_client(**limits), _USED, now, queue_retry_s=3.0, **state)
    if quota is None:
        assert got is None
        return
    assert got is not None and got.quota == quota
    assert got.field == f"quotas.client[2].{quota}"
    assert got.retry_after_s == pytest.approx(retry_s)
    assert "client 'logger'" in got.message and got.field in got.message


def _table(enabled: bool = True) -> QuotaTable:
    """Made-up names, resolved by injected lookups (built without the profile's check)."""
    cfg = QuotasConfig(enabled, QuotaLimits(weight=0.5, tokens_per_min=1000), [
        QuotaClient(group="robots", weight=3.0, priority=2),
        QuotaClient(tcp="10.1.0.0/16", name="lan", max_mode="eco"),
        QuotaClient(user="logger", max_mode="eco", tokens_per_min=50),
        QuotaClient(group="sensors", weight=2.0)])
    users, groups = {"logger": 1001, "root": 0}, {"robots": 200, "sensors": 300}
    return QuotaTable.from_config(cfg, users.get, groups.get)


@pytest.mark.parametrize(("uid", "groups", "address", "key", "name"), [
    (1001, {200}, None, "user:1001", "user logger"),         # a user entry wins over groups
    (1002, {300, 200}, None, "group:200", "group robots"),   # the first group in table order
    (1003, {300}, None, "group:300", "group sensors"),
    (1004, {5}, None, "uid:1004", "uid 1004"),               # unlisted: itself, the defaults
    (None, set(), "10.1.2.3", "tcp:10.1.0.0/16", "lan"),
    (None, set(), "::ffff:10.1.2.3", "tcp:10.1.0.0/16", "lan"),  # IPv4-mapped
    (None, set(), "10.2.0.1", "tcp:10.2.0.1", "tcp 10.2.0.1"),
])
def test_quotas_client_for_by_identity(uid: int | None, groups: set[int],
                                       address: str | None, key: str, name: str) -> None:
    c = _table().client_for(uid, frozenset(groups), address)
    assert (c.key, c.name) == (key, name)
    if key.startswith(("uid:", "tcp:10.2")):
        assert c.limits.weight == 0.5 and c.limits.tokens_per_min == 1000
        assert c.field == "quotas.default"
    if key == "user:1001":
        assert c.limits.max_mode == "eco" and c.field == "quotas.client[2]"


def test_quotas_off_means_no_rules_and_no_limits() -> None:
    c = _table(enabled=False).client_for(1001, frozenset({200}))
    assert c.key == "uid:1001" and c.limits == Limits() and c.limits.priority is None


def test_quotas_a_name_that_no_longer_resolves_is_refused() -> None:
    cfg = profile_from_mapping({"quotas": {"enabled": True, "client": [{"user": "root"}]}},
                               where="t.toml").quotas
    with pytest.raises(QuotaError, match=r"\[quotas.client\[0\]\] user: no such user"):
        QuotaTable.from_config(cfg, lambda name: None, lambda name: None)


# -- the profile table ----------------------------------------------------------------------

@pytest.mark.parametrize(("client", "section", "key", "fragment"), [
    ({"user": "no-such-user-calm"}, "quotas.client[0]", "user", "no such user"),
    ({"group": "no-such-group-calm"}, "quotas.client[0]", "group", "no such group"),
    ({"user": "root", "group": "root"}, "quotas.client[0]", "group", "exactly one of"),
    ({"weight": 2.0}, "quotas.client[0]", "user", "exactly one of"),
    ({"tcp": "10.0.0.0/33"}, "quotas.client[0]", "tcp", "not an IP address or network"),
    ({"user": "root", "weight": 0.0}, "quotas.client[0]", "weight", "must be >= 0.01"),
    ({"user": "root", "max_mode": "turbo"}, "quotas.client[0]", "max_mode", "expected one of"),
    ({"user": "root", "max_queue_share": 2}, "quotas.client[0]", "max_queue_share",
     "must be <= 1"),
    ({"user": "root", "tokens_per_min": -1}, "quotas.client[0]", "tokens_per_min",
     "must be >= 0"),
    ({"user": "root", "bogus": 1}, "quotas.client[0]", "bogus", "unknown field"),
])
def test_config_quota_errors_name_the_field(client: dict[str, Any], section: str, key: str,
                                            fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        profile_from_mapping({"quotas": {"client": [client]}}, where="profiles/q.toml")
    e = ei.value
    assert (e.where, e.section, e.key) == ("profiles/q.toml", section, key)
    assert fragment in str(e) and str(e).startswith("profiles/q.toml: ")


def test_config_quota_table_naming_an_unknown_user_is_refused_at_load(tmp_path: Path) -> None:
    prof = write_profile(tmp_path / "edge.toml", """
[quotas]
enabled = true
[[quotas.client]]
user = "root"
[[quotas.client]]
name = "logger"
user = "no-such-user-calm"
max_mode = "eco"
""")
    with pytest.raises(ConfigError) as ei:
        load_settings(str(prof), env={"HOME": str(tmp_path)})
    assert str(ei.value) == (f"{prof}: [quotas.client[1]] user: no such user: "
                             "'no-such-user-calm'")


def test_config_quota_duplicates_and_env_arrays_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[quotas\] client\[1\].user: 'root' is already in "
                                          r"client\[0\]"):
        profile_from_mapping({"quotas": {"client": [{"user": "root"}, {"user": "root"}]}},
                             where="q.toml")
    with pytest.raises(ConfigError, match=r"CALM_EDGE_QUOTAS_CLIENT.*array of tables"):
        profile_from_mapping({}, where="q.toml", env={"CALM_EDGE_QUOTAS_CLIENT": "root"})
    with pytest.raises(ConfigError, match=r"^q.toml: \[quotas.client\[0\]\]: expected a table, "
                                          r"got 'root'$"):
        profile_from_mapping({"quotas": {"client": ["root"]}}, where="q.toml")
    p = profile_from_mapping({}, where="q.toml", env={"CALM_EDGE_QUOTAS_ENABLED": "1"})
    assert p.quotas.enabled and p.quotas.client == []


# -- fair sharing in the scheduler: fake clients, a fake clock --------------------------------

class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(tiny_fleet: tuple[Path, Path], *, fair: bool = True, capacity: int = 64,
         clock: Clock | None = None) -> tuple[Scheduler, Residency]:
    fleet_path, models = tiny_fleet
    clock = clock or Clock()
    res = Residency(load_fleet(fleet_path), models, RuntimeConfig(n_batch=64), 1 << 40,
                    FakeFactory(), ThreadPoolExecutor(2), clock=clock, memory_probe=lambda: 0)
    return Scheduler(res, 1, capacity, prefetch=False, fair=fair, clock=clock), res


def client(name: str, **limits: Any) -> Client:
    return Client(f"user:{name}", name, Limits(**limits), f"quotas.client[{name}]")


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def _serve_in_order(sched: Scheduler, clock: Clock, first: Lease,
                          jobs: list[asyncio.Task[Lease]], took_s: float = 1.0,
                          ) -> list[Lease]:
    """Release `first`, then each lease as it is granted (each generation `took_s`);
    return the leases in grant order."""
    order: list[Lease] = []
    clock.t += took_s
    sched.release(first)
    pending = set(jobs)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1  # one lane: one grant at a time
        lease = done.pop().result()
        order.append(lease)
        clock.t += took_s
        sched.release(lease)
    return order


@pytest.mark.parametrize("fair", [True, False])
def test_scheduler_fair_share_a_greedy_client_cannot_starve_a_polite_one(
        tiny_fleet: tuple[Path, Path], fair: bool) -> None:
    """Greedy has 8 requests waiting behind its running one when polite asks once: with
    fair sharing polite is served next, in one generation's time; without, after all 8."""
    clock = Clock()

    async def main() -> list[str | None]:
        sched, res = make(tiny_fleet, fair=fair, clock=clock)
        await res.scan()
        greedy, polite = client("greedy"), client("polite")
        running = await sched.acquire("tiny-chat", predicted_s=1.0, client=greedy)
        jobs = [asyncio.create_task(sched.acquire("tiny-chat", predicted_s=1.0,
                                                  client=greedy)) for _ in range(8)]
        await settle()
        # what admission predicts for polite: the running generation, plus 8 without fairness
        assert sched.predicted_wait_s(0, polite) == pytest.approx(1.0 if fair else 9.0)
        jobs.append(asyncio.create_task(sched.acquire("tiny-chat", predicted_s=1.0,
                                                      client=polite)))
        await settle()
        order = await _serve_in_order(sched, clock, running, jobs)
        polite_wait = next(lease.waited_s for lease in order if lease.client == "user:polite")
        assert polite_wait == pytest.approx(1.0 if fair else 9.0)
        await sched.aclose()
        sched.shutdown()
        return [lease.client for lease in order]

    order = asyncio.run(main())
    assert order.index("user:polite") == (0 if fair else 8)


def test_scheduler_fair_share_follows_the_weights(tiny_fleet: tuple[Path, Path]) -> None:
    """Two clients with 12 requests each waiting, weights 1 and 3: of the first 8 grants
    the heavier gets 6."""
    clock = Clock()

    async def main() -> list[str | None]:
        sched, res = make(tiny_fleet, clock=clock)
        await res.scan()
        light, heavy = client("light", weight=1.0), client("heavy", weight=3.0)
        running = await sched.acquire("tiny-chat", predicted_s=1.0)
        jobs = []
        for _ in range(12):
            for c in (light, heavy):
                jobs.append(asyncio.create_task(sched.acquire("tiny-chat", predicted_s=1.0,
                                                              client=c)))
        await settle()
        order = await _serve_in_order(sched, clock, running, jobs)
        await sched.aclose()
        sched.shutdown()
        return [lease.client for lease in order]

    order = asyncio.run(main())
    assert order[:8].count("user:heavy") == 6
    assert order.count("user:heavy") == order.count("user:light") == 12


def test_scheduler_fair_share_charges_what_generation_took(
        tiny_fleet: tuple[Path, Path]) -> None:
    """A is predicted 1 s but holds its lane 4 s; B takes its predicted 1 s. The next
    requests of both: B's goes first, though A asked first."""
    clock = Clock()

    async def main() -> list[str | None]:
        sched, res = make(tiny_fleet, clock=clock)
        await res.scan()
        a, b = client("a"), client("b")
        first = await sched.acquire("tiny-chat", predicted_s=1.0, client=a)
        second = asyncio.create_task(sched.acquire("tiny-chat", predicted_s=1.0, client=b))
        await settle()
        clock.t += 4.0
        sched.release(first)
        lease_b = await second
        jobs = [asyncio.create_task(sched.acquire("tiny-chat", predicted_s=1.0, client=c))
                for c in (a, b)]
        await settle()
        order = await _serve_in_order(sched, clock, lease_b, jobs)
        await sched.aclose()
        sched.shutdown()
        return [lease.client for lease in order]

    assert asyncio.run(main()) == ["user:b", "user:a"]


def test_scheduler_fair_share_keeps_each_clients_own_order(
        tiny_fleet: tuple[Path, Path]) -> None:
    """Predicted 10 s, done in 1: the correction is carried into the client's next
    requests, never used to put a new request ahead of its own older ones (here: 8
    waiting, 3 served, then one more asked)."""
    clock = Clock()

    async def main() -> list[int]:
        sched, res = make(tiny_fleet, clock=clock)
        await res.scan()
        greedy = client("greedy")
        jobs = [asyncio.create_task(sched.acquire("tiny-chat", predicted_s=10.0,
                                                  client=greedy)) for _ in range(8)]
        await settle()
        granted: list[int] = []
        while len(granted) < len(jobs):
            done = next(i for i, j in enumerate(jobs) if j.done() and i not in granted)
            granted.append(done)
            clock.t += 1.0
            sched.release(jobs[done].result())
            if len(granted) == 3:
                jobs.append(asyncio.create_task(sched.acquire(
                    "tiny-chat", predicted_s=10.0, client=greedy)))
            await settle()
        await sched.aclose()
        sched.shutdown()
        return granted

    assert asyncio.run(main()) == list(range(9))


def test_scheduler_fair_share_works_within_priorities(tiny_fleet: tuple[Path, Path]) -> None:
    clock = Clock()

    async def main() -> list[str | None]:
        sched, res = make(tiny_fleet, clock=clock)
        await res.scan()
        greedy, polite = client("greedy"), client("polite")
        running = await sched.acquire("tiny-chat", predicted_s=1.0, client=greedy)
        jobs = [asyncio.create_task(sched.acquire("tiny-chat", predicted_s=1.0,
                                                  client=greedy)) for _ in range(3)]
        jobs.append(asyncio.create_task(sched.acquire("tiny-chat", predicted_s=1.0,
                                                      client=polite)))
        jobs.append(asyncio.create_task(sched.acquire("tiny-chat", predicted_s=1.0,
                                                      priority=5, client=greedy)))
        await settle()
        order = await _serve_in_order(sched, clock, running, jobs)
        await sched.aclose()
        sched.shutdown()
        return [lease.client for lease in order]

    order = asyncio.run(main())
    assert order[:2] == ["user:greedy", "user:polite"]  # the priority-5 one, then fair


def test_scheduler_over_quota_is_refused_naming_it_until_the_window_passes(
        tiny_fleet: tuple[Path, Path]) -> None:
    clock = Clock()

    async def main() -> None:
        sched, res = make(tiny_fleet, clock=clock)
        await res.scan()
        logger, other = client("logger", tokens_per_min=100), client("other")
        lease = await sched.acquire("tiny-chat", client=logger)
        lease.tokens_out = 150  # counted while it runs, too
        with pytest.raises(OverQuota) as ei:
            await sched.acquire("tiny-chat", client=logger)
        e = ei.value
        assert (e.quota, e.field, e.client) == ("tokens_per_min",
                                                "quotas.client[logger].tokens_per_min",
                                                "logger")
        assert "150 in the last 60 s" in str(e) and e.retry_after_s == 60.0
        clock.t += 2.0
        sched.release(lease)   # charged: 150 tokens, 2 s
        clock.t += 30.0
        with pytest.raises(OverQuota) as ei:
            await sched.acquire("tiny-chat", client=logger)
        assert ei.value.retry_after_s == pytest.approx(31.0)  # the bucket [102, 103) + 60 s
        sched.release(await sched.acquire("tiny-chat", client=other))  # others go on
        clock.t += 32.0
        sched.release(await sched.acquire("tiny-chat", client=logger))
        view = {c["client"]: c for c in sched.snapshot().clients}
        assert view["logger"]["refused"] == {"tokens_per_min": 2}
        assert view["logger"]["tokens"] == 150 and view["logger"]["requests"] == 2
        assert view["logger"]["last_minute"]["tokens"] == 0
        assert sched.rejected["quota"] == 2
        await sched.aclose()
        sched.shutdown()

    asyncio.run(main())


def test_scheduler_queue_share_bounds_one_client_not_the_others(
        tiny_fleet: tuple[Path, Path]) -> None:
    clock = Clock()

    async def main() -> None:
        sched, res = make(tiny_fleet, capacity=8, clock=clock)
        await res.scan()
        greedy, polite = client("greedy", max_queue_share=0.25), client("polite")
        running = await sched.acquire("tiny-chat", client=greedy)
        jobs = [asyncio.create_task(sched.acquire("tiny-chat", client=greedy))
                for _ in range(2)]
        await settle()
        with pytest.raises(OverQuota, match=r"max_queue_share = 0.25 of 8 places"):
            await sched.acquire("tiny-chat", client=greedy)
        jobs.append(asyncio.create_task(sched.acquire("tiny-chat", client=polite)))
        await settle()
        assert sched.waiting == 3
        view = {c["client"]: c for c in sched.snapshot().clients}
        assert (view["greedy"]["waiting"], view["greedy"]["running"]) == (2, 1)
        assert view["polite"]["waiting"] == 1
        await _serve_in_order(sched, clock, running, jobs)
        await sched.aclose()
        sched.shutdown()

    asyncio.run(main())


# -- the gate: which client, which cache scope ------------------------------------------------

def test_gate_private_cache_scope_overrides_shared_groups(
        make_settings: Callable[..., Settings]) -> None:
    from calm_edge.server.gate import RequestGate

    s = make_settings("""
[cache]
shared_groups = ["users"]
[quotas]
enabled = true
[[quotas.client]]
user = "nobody"
private_cache = true
[[quotas.client]]
tcp = "127.0.0.2"
private_cache = true
""")
    gate = RequestGate(s, lambda route, status: None, lambda request: "other")

    def scope(peer: Peer | None, remote: str | None = None) -> str:
        return gate.cache_scope(peer, gate.client(peer, remote), remote)

    assert scope(Peer(1, 65534, 65534, frozenset({65534, 100}))) == "uid:65534"
    assert scope(Peer(1, 65533, 65533, frozenset({65533, 100}))) == "gid:100"
    assert scope(Peer(1, 65533, 65533, frozenset({65533}))) == "uid:65533"
    assert scope(None, "127.0.0.2") == "tcp:127.0.0.2"
    assert scope(None, "127.0.0.1") == "tcp"  # TCP peers share, unless marked private


# -- through the daemon -----------------------------------------------------------------------

def _post(path: Path, body: dict[str, Any]) -> dict[str, Any]:
    raw = raw_request(path, http("POST", "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"}))
    head, _, payload = raw.partition(b"\r\n\r\n")
    headers = dict(line.decode().lower().split(": ", 1) for line in head.split(b"\r\n")[1:])
    return {"status": int(head.split(b" ", 2)[1]), "retry_after": headers.get("retry-after"),
            "body": json.loads(payload)}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_hardening_over_quota_uid_is_429_naming_its_quota(
        make_settings: Callable[..., Settings], short_tmp: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """nobody may generate 5 tokens a minute, eco only: its first answer (8 tokens) runs at
    eco though it asks for quality; its second is 429 with Retry-After naming the quota;
    root is not limited; status shows nobody its own usage only, root everyone's."""
    short_tmp.chmod(0o755)
    nobody = 65534
    s = make_settings("""
[quotas]
enabled = true
[[quotas.client]]
name = "logger"
user = "nobody"
tokens_per_min = 5
max_mode = "eco"
""", server={"socket_mode": "0666"})

    def as_nobody() -> list[Any]:
        first = _post(s.socket_path, {**CHAT, "calm": {"cache": False, "mode": "quality"}})
        second = _post(s.socket_path, CHAT)
        status = json.loads(raw_request(s.socket_path, http("GET", "/calm/status"))
                            .partition(b"\r\n\r\n")[2])
        return [first, second, status["quotas"]]

    with run_daemon(s, FakeFactory(answer_tokens=8)), uds_client(s) as c:
        first, second, quotas = _as_user(nobody, as_nobody)
        assert first["status"] == 200, first
        assert first["body"]["calm"]["mode"] == "eco"
        assert first["body"]["usage"]["completion_tokens"] == 8
        assert second["status"] == 429 and int(second["retry_after"]) >= 1
        err = second["body"]["error"]
        assert err["code"] == "quota_exceeded"
        assert err["param"] == "quotas.client[0].tokens_per_min"
        assert "client 'logger' is over its quota of 5 generated tokens per minute" \
            in err["message"]
        assert [q["client"] for q in quotas["clients"]] == ["logger"]
        assert quotas["enabled"] and quotas["clients"][0]["refused"] == {"tokens_per_min": 1}
        for _ in range(2):  # root: the defaults, no limits
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        st = c.get("/calm/status").json()
        assert {q["client"] for q in st["quotas"]["clients"]} == {"logger", "uid 0"}
        assert "logger" in "\n".join(top.render(st, width=300))
        _print_clients(st)
        table = capsys.readouterr().out
        row = next(line for line in table.splitlines() if "logger" in line)
        assert "quotas on" in table and "8/5" in row and "tokens_per_min 1" in row \
            and "(max eco)" in row
        metrics = c.get("/metrics").text
        assert 'calm_edge_quota_refusals_total{client="logger",quota="tokens_per_min"} 1.0' \
            in metrics


def test_hardening_over_quota_tcp_address_is_429(make_settings: Callable[..., Settings],
                                                 ) -> None:
    """Over TCP the address is the identity: 127.0.0.2 is limited, 127.0.0.1 is not."""
    port = _free_port()
    s = make_settings("""
[quotas]
enabled = true
[[quotas.client]]
tcp = "127.0.0.2"
gen_s_per_min = 0.001
""", server={"tcp": f"127.0.0.1:{port}"})

    def post(source: str) -> tuple[int, dict[str, Any]]:
        with socket.create_connection(("127.0.0.1", port), timeout=30,
                                      source_address=(source, 0)) as sk:
            body = json.dumps({**CHAT, "max_tokens": 4}).encode()
            sk.sendall(http("POST", "/v1/chat/completions", body,
                            {"Content-Type": "application/json", "Host": "127.0.0.1"}))
            data = b""
            while chunk := sk.recv(65536):
                data += chunk
        head, _, payload = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), json.loads(payload)

    with run_daemon(s, FakeFactory(answer_tokens=4, token_delay_s=0.01)):
        assert post("127.0.0.2")[0] == 200
        status, body = post("127.0.0.2")
        assert status == 429 and body["error"]["param"] == "quotas.client[0].gen_s_per_min"
        assert "client 'tcp 127.0.0.2/32'" in body["error"]["message"]
        assert post("127.0.0.1")[0] == 200


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run clients as other users")
def test_hardening_private_cache_never_crosses_users(make_settings: Callable[..., Settings],
                                                     short_tmp: Path) -> None:
    """Two users in a group that shares cached answers: they share, until the quota table
    marks one private; then neither sees the other's answers, either way."""
    short_tmp.chmod(0o755)
    users = 100  # the `users` group

    def ask(path: Path, text: str) -> Callable[[], str]:
        def go() -> str:
            body = {**CHAT, "temperature": 0, "calm": {"cache": True},
                    "messages": [{"role": "user", "content": text}]}
            return str(_post(path, body)["body"]["calm"]["cache"])
        return go

    shared = """
[cache]
shared_groups = ["users"]
"""
    private = shared + """
[quotas]
enabled = true
[[quotas.client]]
user = "nobody"
private_cache = true
"""
    for profile, expect in ((shared, "hit"), (private, "miss")):
        s = make_settings(profile, server={"socket_mode": "0666"})
        with run_daemon(s, FakeFactory(answer_tokens=2)):
            assert _as_user(65534, ask(s.socket_path, "capital of France?"), (users,)) == "miss"
            assert _as_user(65533, ask(s.socket_path, "capital of France?"), (users,)) == expect
            assert _as_user(65533, ask(s.socket_path, "capital of Peru?"), (users,)) == "miss"
            assert _as_user(65534, ask(s.socket_path, "capital of Peru?"), (users,)) == expect
