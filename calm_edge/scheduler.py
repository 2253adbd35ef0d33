"""The scheduler: the one owner of who generates with which model, and when.

Owned by the event loop (no locks). It holds:

- **the queue** of requests waiting for a generation place: highest priority first, then
  arrival; bounded by count (`capacity`) and by predicted wait: a request whose predicted
  wait already exceeds its deadline is refused at once (`Overloaded`, 429 with a
  Retry-After) instead of timing out in line;
- **clients** (calm_edge.quotas): each request's client is charged, at release, the tokens
  and lane time its generation used; a client over its quota is refused at once
  (`OverQuota`, 429 naming the quota). With fair sharing on (`fair`: quotas enabled),
  waiters of one priority are served least-served client first: each client has a virtual
  service, charged its request's predicted time over its weight when a lane is granted
  and corrected to what the generation really took at release (so it only ever grows by
  real use); a client that had nothing waiting starts from the virtual service of the last
  client granted, so an idle client banks no credit; a client's own requests keep their
  order. So a client with 32 requests waiting takes turns with one that asks one at a
  time instead of going 32 times first;
- **the inference lanes**: `n` single-thread executors (llama.cpp keeps an OpenMP team per
  calling thread, so native work must not hop threads). A lease holds one lane for its
  whole generation; a load for it runs on the same lane;
- **model leases**: at most one generation per model at a time (a llama.cpp context is not
  thread-safe): `slot.in_use` is 0 or 1 and only this module changes it;
- **loads and evictions**, carried out by `Residency`: one load at a time; models with
  requests waiting for them are evicted only as a last resort;
- **collation**: when the request first in line needs a model swap, a waiting request for a
  model already in memory may go ahead, at most `collate_max_bypass` times per request and
  not once it has waited `collate_max_wait_s` (a swap costs seconds; serving what is
  resident first saves them without starving anyone);
- **demand**: an EWMA of the models asked for, which eviction (keep value) and prefetch use;
- **prefetch**: when nothing runs or waits, the model demand expects most is loaded if it
  fits the free budget, else its file pages are warmed;
- **generation windows**, for sharing energy between overlapping generations.

API: `await acquire(model, ...) -> Lease`; every lease goes back through `release(lease)`.
Background work (calibration) acquires with `background=True`: it waits behind every
request and never counts as busy.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor as ThreadPool
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from calm_edge.backends.base import ModelState
from calm_edge.quotas import ANONYMOUS, Client, Usage, charge, over_quota, windowed
from calm_edge.residency import ModelSlot, ModelUnavailable, Residency

log = logging.getLogger("calm_edge.scheduler")

BACKGROUND_PRIORITY = -1_000_000


class Overloaded(RuntimeError):
    """Refused at once: the queue is full, or the predicted wait exceeds the deadline."""

    def __init__(self, message: str, waiting: int, retry_after_s: float) -> None:
        self.waiting, self.retry_after_s = waiting, retry_after_s
        super().__init__(message)


class OverQuota(Overloaded):
    """Refused at once: the request's client is over one of its quotas (`quota`, the
    profile field `field`)."""

    def __init__(self, message: str, waiting: int, retry_after_s: float, client: str,
                 quota: str, field: str) -> None:
        self.client, self.quota, self.field = client, quota, field
        super().__init__(message, waiting, retry_after_s)


class QueueTimeout(RuntimeError):
    """The deadline passed while the request waited for a place."""


class Cancelled(RuntimeError):
    """The request was given up (its client went away) while it waited."""


@dataclass(eq=False)
class Lease:
    """One generation place: a model held loaded and idle for this holder, and a lane."""

    model: str
    slot: ModelSlot
    lane: ThreadPool
    granted_s: float
    waited_s: float          # from acquire() to the grant: queue and load
    loaded: bool             # the grant loaded the model
    predicted_s: float       # what the plan expects the generation to take
    background: bool = False
    holds_model: bool = True  # counted in slot.in_use (safe from eviction); a lease taken
                              # with load=False is not: its holder may unload and load
    gen_start_s: float | None = None  # set by the executor (time.monotonic)
    gen_end_s: float | None = None
    tokens_out: int = 0               # pieces generated so far (the executor's worker counts)
    released: bool = False
    client: str | None = None         # whose usage this is (None: background work)
    charged_s: float = 0.0            # virtual service its client was charged at the grant


@dataclass
class _ClientState:
    """One client's usage and fair-sharing position (owned by the scheduler)."""

    client: Client                    # as last seen (limits change on reload)
    usage: Usage = field(default_factory=Usage)
    vservice_s: float = 0.0           # generation time over weight (fair sharing's order)
    refused: dict[str, int] = field(default_factory=dict)
    last_s: float = 0.0


@dataclass(order=True)
class _Waiter:
    key: tuple[int, int]             # (-priority, arrival)
    model: str = field(compare=False)
    predicted_s: float = field(compare=False)
    enqueued_s: float = field(compare=False)
    future: asyncio.Future[Lease] = field(compare=False)
    load: bool = field(compare=False, default=True)
    background: bool = field(compare=False, default=False)
    bypassed: int = field(compare=False, default=0)
    client: str | None = field(compare=False, default=None)
    charged_s: float = field(compare=False, default=0.0)
    resident_only: bool = field(compare=False, default=False)


@dataclass(frozen=True)
class SchedulerView:
    """A snapshot for status and `calm-edge top`."""

    lanes: int
    free_lanes: int
    queue: tuple[dict[str, Any], ...]    # in service order: model, priority, waited_s, ...
    active: tuple[dict[str, Any], ...]   # leases: model, running_s, predicted_s
    demand: dict[str, float]
    loading: str | None
    rejected: dict[str, int]
    predicted_wait_s: float              # for a new request of priority 0
    collated: int                        # grants that went ahead of a swap
    fair_share: bool = False             # waiters ordered least-served client first
    clients: tuple[dict[str, Any], ...] = ()  # usage per client, busiest first


class Scheduler:
    def __init__(self, residency: Residency, lanes: int, capacity: int, *,
                 collate_max_bypass: int = 2, collate_max_wait_s: float = 10.0,
                 demand_alpha: float = 0.1, prefetch: bool = True,
                 prefetch_min_share: float = 0.3, fair: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`fair`: weighted fair sharing between clients (see the module doc); off, one
        queue in priority then arrival order. Quotas apply either way (a client's limits
        come with its requests)."""
        self._res = residency
        self.capacity = capacity
        self.fair = fair
        self.collate_max_bypass, self.collate_max_wait_s = collate_max_bypass, collate_max_wait_s
        self.demand_alpha = demand_alpha
        self.prefetch_enabled, self.prefetch_min_share = prefetch, prefetch_min_share
        self._clock = clock
        self._lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"calm-infer-{i}")
                       for i in range(lanes)]
        self._free: list[ThreadPool] = list(self._lanes)
        self._heap: list[_Waiter] = []
        self._seq = itertools.count()
        self._busy_models: set[str] = set()   # leased, being loaded for a grant, or failing
        self._active: set[Lease] = set()
        self._loading: str | None = None
        self._demand: dict[str, float] = {}
        self._finished: collections.deque[tuple[float, float]] = collections.deque(maxlen=256)
        self._service_s = 5.0                 # EWMA of how long a lease is held
        self._tasks: set[asyncio.Task[Any]] = set()
        self._prefetch_pending = False
        self.rejected = {"queue_full": 0, "predicted_wait": 0, "quota": 0}
        self._clients: dict[str, _ClientState] = {}
        self._vtime = 0.0                     # virtual service of the last client granted
        self.collated = 0
        self.prefetches = {"load": 0, "warm": 0}
        self.on_prefetch: Callable[[str, str], None] | None = None  # (model, "load"|"warm")

    # -- state -----------------------------------------------------------------------------

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    def _live(self) -> list[_Waiter]:
        """Waiters in service order: priority, then (fair sharing) the least-served client,
        then arrival."""
        live = [w for w in self._heap if not w.future.done()]
        if not self.fair:
            return sorted(live)
        return sorted(live, key=lambda w: (w.key[0], self._vservice(w.client), w.key[1]))

    def _vservice(self, key: str | None) -> float:
        st = self._clients.get(key or "")
        return st.vservice_s if st is not None else self._vtime

    @property
    def waiting(self) -> int:
        """Requests waiting for a place (background work not counted)."""
        return sum(1 for w in self._heap if not w.future.done() and not w.background)

    def busy(self) -> bool:
        """Requests are generating or waiting (background work does not count)."""
        return self.waiting > 0 or any(not lease.background for lease in self._active)

    def predicted_wait_s(self, priority: int = 0, client: Client | None = None) -> float:
        """How long a new request of `priority` (from `client`) would wait for a lane: the
        predicted rest of the running generations and the predicted work queued ahead of
        it (in service order: with fair sharing, what other clients get before it), over
        the lanes."""
        if self._free and not self.waiting:
            return 0.0
        now = self._clock()
        running = sum(max(lease.predicted_s - (now - lease.granted_s), 0.0)
                      for lease in self._active if not lease.background)
        live = [w for w in self._live() if not w.background]
        if not self.fair:
            ahead = sum(w.predicted_s for w in live if -w.key[0] >= priority)
        else:
            ahead = self._fair_ahead_s(live, priority, client or ANONYMOUS)
        return (running + ahead) / max(len(self._lanes), 1)

    def _fair_ahead_s(self, live: list[_Waiter], priority: int, client: Client) -> float:
        """Predicted work served before a new request of `client` at `priority`: every
        waiter of a higher priority and the client's own, and of each other client's,
        those granted while its virtual service stays at or under the newcomer's."""
        mine = self._joining_vservice(client)
        ahead, others = 0.0, collections.defaultdict(list)
        for w in live:
            if -w.key[0] > priority or (-w.key[0] == priority and w.client == client.key):
                ahead += w.predicted_s
            elif -w.key[0] == priority:
                others[w.client].append(w)
        for key, waiters in others.items():
            st = self._clients.get(key or "")
            v, weight = self._vservice(key), st.client.limits.weight if st else 1.0
            for w in waiters:
                if v > mine:
                    break
                ahead += w.predicted_s
                v += (w.predicted_s or self._service_s) / weight
        return ahead

    def _joining_vservice(self, client: Client) -> float:
        """The virtual service a client's new request is ordered by: its own, or that of
        the last client granted when it had nothing waiting (no credit banked idle)."""
        st = self._clients.get(client.key)
        if st is None:
            return self._vtime
        if any(w.client == client.key for w in self._heap if not w.future.done()):
            return st.vservice_s
        return max(st.vservice_s, self._vtime)

    def retry_after_s(self) -> float:
        return max(1.0, self.predicted_wait_s() or
                   (self.waiting + 1) * self._service_s / max(len(self._lanes), 1))

    def overlapping(self, t0_s: float, t1_s: float) -> list[tuple[float, float]]:
        """Other generation windows overlapping [t0_s, t1_s]: released ones, and those of
        leases still held (a generation that ended before its lease is released counts with
        its end; a running one ends at t1_s)."""
        out = [(a, b) for a, b in self._finished if a < t1_s and b > t0_s
               and (a, b) != (t0_s, t1_s)]
        for lease in self._active:
            a = lease.gen_start_s
            b = t1_s if lease.gen_end_s is None else min(lease.gen_end_s, t1_s)
            if a is not None and a < t1_s and b > t0_s and (a, lease.gen_end_s) != (t0_s, t1_s):
                out.append((a, b))
        return out

    def _client(self, client: Client, now: float) -> _ClientState:
        st = self._clients.get(client.key)
        if st is None:
            self._forget_idle_clients()
            st = self._clients[client.key] = _ClientState(client, last_s=now)
        st.client, st.last_s = client, now
        return st

    def _forget_idle_clients(self, keep: int = 255) -> None:
        """Bound the table (TCP addresses are many): forget the longest idle clients with
        nothing waiting or running."""
        if len(self._clients) <= keep:
            return
        busy = {w.client for w in self._heap if not w.future.done()} | {
            lease.client for lease in self._active}
        idle = sorted((st.last_s, k) for k, st in self._clients.items() if k not in busy)
        for _, k in idle[:len(self._clients) - keep]:
            del self._clients[k]

    def _running(self, key: str, now: float) -> tuple[int, float]:
        """(tokens, lane seconds) of a client's generations in progress."""
        leases = [lease for lease in self._active if lease.client == key]
        return (sum(lease.tokens_out for lease in leases),
                sum(now - lease.granted_s for lease in leases))

    def clients_view(self) -> tuple[dict[str, Any], ...]:
        """Usage per client (the last minute, and since start), busiest first."""
        now = self._clock()
        waiting = collections.Counter(w.client for w in self._live() if not w.background)
        running = collections.Counter(lease.client for lease in self._active)
        rows: list[dict[str, Any]] = []
        total_s = sum(windowed(st.usage, now)[1] for st in self._clients.values()) or 1.0
        for key, st in self._clients.items():
            tokens, gen_s = windowed(st.usage, now)
            run_tokens, run_s = self._running(key, now)
            rows.append({
                "client": st.client.name, "key": key, "quotas_from": st.client.field,
                "limits": st.client.limits.to_status(), "waiting": waiting[key],
                "running": running[key],
                "last_minute": {"tokens": tokens + run_tokens,
                                "gen_s": round(gen_s + run_s, 3),
                                "gen_share": round(gen_s / total_s, 3)},
                "requests": st.usage.requests, "tokens": st.usage.tokens,
                "gen_s": round(st.usage.gen_s, 3), "refused": dict(st.refused)})
        rows.sort(key=lambda r: (-r["last_minute"]["gen_s"], -r["requests"], r["key"]))
        return tuple(rows)

    def snapshot(self) -> SchedulerView:
        now = self._clock()
        names = {k: st.client.name for k, st in self._clients.items()}
        queue = tuple({"model": w.model, "priority": -w.key[0],
                       "waited_s": round(now - w.enqueued_s, 3),
                       "predicted_s": round(w.predicted_s, 3), "bypassed": w.bypassed,
                       "background": w.background,
                       "client": names.get(w.client) if w.client else None}
                      for w in self._live())
        mono = time.monotonic()
        active = tuple({"model": lease.model, "running_s": round(now - lease.granted_s, 3),
                        "predicted_s": round(lease.predicted_s, 3),
                        "background": lease.background, "tokens": lease.tokens_out,
                        "tokens_per_s": round(lease.tokens_out / max(
                            mono - lease.gen_start_s, 1e-3), 1)
                        if lease.gen_start_s is not None else None}
                       for lease in sorted(self._active, key=lambda x: x.granted_s))
        return SchedulerView(len(self._lanes), len(self._free), queue, active,
                             {m: round(v, 3) for m, v in self._demand.items()}, self._loading,
                             dict(self.rejected), round(self.predicted_wait_s(), 3),
                             self.collated, self.fair, self.clients_view())

    # -- acquiring and releasing -----------------------------------------------------------

    async def acquire(self, model: str, *, priority: int = 0, deadline_s: float = math.inf,
                      predicted_s: float = 0.0, gone: asyncio.Event | None = None,
                      load: bool = True, background: bool = False,
                      client: Client | None = None, resident_only: bool = False) -> Lease:
        """Wait for a lane and `model` (loaded unless `load` is False) held for the caller
        alone. `deadline_s` is on the scheduler's clock; `client` is whose request it is
        (None: the daemon's own). Raises Overloaded (at once; OverQuota when the client is
        over a quota), QueueTimeout, Cancelled (`gone` was set), or ModelUnavailable (it
        cannot load; with `resident_only`, it is not loaded when its turn comes: nothing
        is loaded or evicted for this holder)."""
        now = self._clock()
        key: tuple[int, int]
        who: str | None = None
        if background:
            key = (-BACKGROUND_PRIORITY, next(self._seq))
        else:
            client = client or ANONYMOUS
            if self.waiting >= self.capacity:
                self.rejected["queue_full"] += 1
                raise Overloaded(f"the request queue is full ({self.waiting} waiting); retry "
                                 f"in {self.retry_after_s():.0f}s", self.waiting,
                                 self.retry_after_s())
            st = self._client(client, now)
            self._check_quota(st, now)
            wait_s = self.predicted_wait_s(priority, client)
            if wait_s > 0 and now + wait_s > deadline_s:
                self.rejected["predicted_wait"] += 1
                raise Overloaded(f"the predicted wait ({wait_s:.1f} s) exceeds the request's "
                                 f"deadline ({max(deadline_s - now, 0):.1f} s left); retry in "
                                 f"{wait_s:.0f}s", self.waiting, wait_s)
            self._note_demand(model)
            st.vservice_s = self._joining_vservice(client)
            key, who = (-priority, next(self._seq)), client.key
        fut: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, _Waiter(key, model, predicted_s, now, fut, load,
                                           background, client=who,
                                           resident_only=resident_only))
        self._dispatch()
        waits: set[asyncio.Future[Any]] = {fut}
        gone_wait = asyncio.ensure_future(gone.wait()) if gone is not None else None
        if gone_wait is not None:
            waits.add(gone_wait)
        try:
            timeout = None if math.isinf(deadline_s) else max(deadline_s - self._clock(), 0.0)
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self._abandon(fut)
            raise
        finally:
            if gone_wait is not None:
                gone_wait.cancel()
        if fut.done():
            return fut.result()  # a Lease, or the grant's ModelUnavailable
        self._abandon(fut)
        if gone is not None and gone.is_set():
            raise Cancelled("the client went away while the request waited")
        raise QueueTimeout("deadline exceeded while waiting for a generation place")

    def _check_quota(self, st: _ClientState, now: float) -> None:
        """Raise OverQuota when the client may not queue another request now."""
        key = st.client.key
        tokens, gen_s = self._running(key, now)
        waiting = sum(1 for w in self._heap if not w.future.done() and w.client == key)
        refusal = over_quota(st.client, st.usage, now, running_tokens=tokens,
                             running_gen_s=gen_s, waiting=waiting, capacity=self.capacity,
                             queue_retry_s=self.retry_after_s())
        if refusal is None:
            return
        self.rejected["quota"] += 1
        st.refused[refusal.quota] = st.refused.get(refusal.quota, 0) + 1
        raise OverQuota(refusal.message, self.waiting, refusal.retry_after_s, st.client.name,
                        refusal.quota, refusal.field)

    def _abandon(self, fut: asyncio.Future[Lease]) -> None:
        """Give up a wait: a lease already granted goes back at once."""
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            self.release(fut.result())
        else:
            fut.cancel()
        self._heap = [w for w in self._heap if not w.future.done()]
        heapq.heapify(self._heap)

    def release(self, lease: Lease, *, error: str | None = None) -> None:
        """The one completion path: the lane and the model go back; the generation window
        is kept for energy attribution; `error` (the backend failed) takes the model out
        for a back-off before anyone else can use it. Idempotent."""
        if lease.released:
            return
        lease.released = True
        now = self._clock()
        self._active.discard(lease)
        if lease.holds_model:
            lease.slot.in_use = max(lease.slot.in_use - 1, 0)
        lease.slot.last_used_s = now
        self._free.append(lease.lane)
        if lease.gen_start_s is not None:
            self._finished.append((lease.gen_start_s, lease.gen_end_s or time.monotonic()))
        if not lease.background:
            held_s = now - lease.granted_s
            self._service_s = 0.8 * self._service_s + 0.2 * held_s
            st = self._clients.get(lease.client or "")
            if st is not None:
                st.usage = charge(st.usage, now, lease.tokens_out, held_s)
                st.last_s = now
                if lease.charged_s:  # what it took, not what was predicted
                    st.vservice_s += held_s / st.client.limits.weight - lease.charged_s
        if error is not None:  # the model stays busy until it is out
            self._spawn(self._take_out(lease.model, error))
        else:
            self._busy_models.discard(lease.model)
            if lease.slot.retired or self._res.used_bytes() > self._res.budget_bytes:
                self._spawn(self._after_use(lease.slot))
        self._dispatch()
        self._schedule_prefetch()

    async def _take_out(self, model: str, error: str) -> None:
        try:
            await self._res.mark_unhealthy(model, error)
        finally:
            self._busy_models.discard(model)
            self._dispatch()

    async def _after_use(self, slot: ModelSlot) -> None:
        await self._res.after_use(slot)
        self._dispatch()

    # -- granting --------------------------------------------------------------------------

    def _ready(self, model: str) -> bool:
        slot = self._res.slots.get(model)
        return slot is not None and slot.state is ModelState.READY

    def _pick(self) -> _Waiter | None:
        """The next waiter to grant, or None. First in line, unless it needs a swap while a
        waiter for a resident model may go ahead (within the fairness bound), or a load is
        already running (one at a time: only resident models can start meanwhile)."""
        live = [w for w in self._live() if w.model not in self._busy_models]
        if not live:
            return None
        head = live[0]
        if not head.load or head.resident_only or self._ready(head.model):
            return head
        ready = [w for w in live[1:] if not w.load or self._ready(w.model)]
        if self._loading is not None:
            return ready[0] if ready else None
        if not ready or head.bypassed >= self.collate_max_bypass \
                or self._clock() - head.enqueued_s >= self.collate_max_wait_s:
            return head
        chosen = ready[0]
        for w in live:
            if w is chosen:
                break
            w.bypassed += 1
        self.collated += 1
        return chosen

    def _dispatch(self) -> None:
        """Hand free lanes to waiters (synchronous; grants finish in their own tasks)."""
        while self._free:
            w = self._pick()
            if w is None:
                return
            self._heap.remove(w)
            heapq.heapify(self._heap)
            st = self._clients.get(w.client or "")
            if self.fair and st is not None:  # charged now, corrected at release
                self._vtime = max(self._vtime, st.vservice_s)
                w.charged_s = (w.predicted_s or self._service_s) / st.client.limits.weight
                st.vservice_s += w.charged_s
            lane = self._free.pop()
            self._busy_models.add(w.model)
            if w.load and not w.resident_only and not self._ready(w.model):
                self._loading = w.model
            self._spawn(self._grant(w, lane))

    async def _grant(self, w: _Waiter, lane: ThreadPool) -> None:
        """Load the waiter's model if needed (on its lane), then hand it the lease."""
        try:
            slot, loaded = self._res.slots[w.model], False
            if w.resident_only and slot.state is not ModelState.READY:
                raise ModelUnavailable(w.model, "not loaded (nothing is loaded for this)")
            if w.load and slot.state is not ModelState.READY:
                waiting_for = {x.model for x in self._live()} - {w.model}
                slot = await self._res.ensure_ready(w.model, lane, protect=waiting_for)
                loaded = True
        except BaseException as e:
            self._loading = None if self._loading == w.model else self._loading
            st = self._clients.get(w.client or "")
            if st is not None:  # no turn taken: no charge
                st.vservice_s -= w.charged_s
            self._free.append(lane)
            self._busy_models.discard(w.model)
            if not w.future.done():
                w.future.set_exception(e if isinstance(e, Exception) else ModelUnavailable(
                    w.model, f"load interrupted ({type(e).__name__})"))
            self._dispatch()
            if not isinstance(e, (Exception, asyncio.CancelledError)):
                raise
            return
        now = self._clock()
        slot.in_use += int(w.load)
        slot.last_used_s = now
        lease = Lease(w.model, slot, lane, now, now - w.enqueued_s, loaded, w.predicted_s,
                      w.background, holds_model=w.load, client=w.client,
                      charged_s=w.charged_s)
        self._active.add(lease)
        if self._loading == w.model:
            self._loading = None
        if w.future.done():  # given up while loading
            self.release(lease)
            return
        w.future.set_result(lease)
        self._dispatch()

    # -- demand and prefetch ---------------------------------------------------------------

    def _note_demand(self, model: str) -> None:
        a = self.demand_alpha
        for m in list(self._demand):
            self._demand[m] *= 1 - a
        self._demand[model] = self._demand.get(model, 0.0) + a
        self._res.expected_use = dict(self._demand)

    def _schedule_prefetch(self) -> None:
        """At most one pending prefetch; it decides from the state when it wakes."""
        if not self.prefetch_enabled or self._prefetch_pending or self.busy():
            return
        self._prefetch_pending = True

        async def later() -> None:
            try:
                await asyncio.sleep(0.05)
                await self._prefetch()
            finally:
                self._prefetch_pending = False

        self._spawn(later())

    async def _prefetch(self) -> None:
        if self.busy() or self._heap or self._loading is not None or not self._free:
            return  # not idle: a prefetch now would compete with a request
        now = self._clock()
        resident = set(self._res.resident())
        choice = max(((share, m) for m, share in self._demand.items()
                      if m not in resident and m in self._res.slots
                      and self._res.slots[m].unavailable_reason(now) is None), default=None)
        if choice is None or choice[0] < self.prefetch_min_share:
            return
        model = choice[1]
        lane = self._free.pop()
        self._busy_models.add(model)
        self._loading = model
        try:
            done = await self._res.prefetch(model, lane)
        except Exception as e:  # best effort
            log.info("prefetch of %s skipped: %s", model, e)
            done = None
        finally:
            self._loading = None
            self._busy_models.discard(model)
            self._free.append(lane)
            self._dispatch()
        if done:
            self.prefetches[done] += 1
            if self.on_prefetch is not None:
                self.on_prefetch(model, done)
            log.info("prefetched %s (%s; demand share %.2f)", model, done, choice[0])

    # -- models by hand (admin routes) -----------------------------------------------------

    async def load(self, model: str) -> ModelSlot:
        """Load `model` now (as a request would, through the queue), then let it go."""
        lease = await self.acquire(model, priority=1_000, predicted_s=0.0)
        self.release(lease)
        return lease.slot

    def pin(self, model: str, pinned: bool) -> None:
        """A pinned model is never evicted (it may still be unloaded by hand)."""
        self._res.pin(model, pinned)

    def state(self, model: str) -> ModelState:
        return self._res.slots[model].state

    async def unload(self, model: str) -> bool:
        """Unload an idle model; False if it was not loaded or is in use."""
        if model in self._busy_models:
            return False
        return await self._res.unload(model)

    async def set_budget(self, budget_bytes: int) -> list[str]:
        evicted = await self._res.set_budget(budget_bytes)
        self._dispatch()
        return evicted

    # -- lifecycle -------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Refuse what still waits; wait for background work (prefetch, take-outs)."""
        for w in list(self._heap):
            if not w.future.done():
                w.future.set_exception(ModelUnavailable(w.model, "the daemon is stopping"))
        self._heap.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def shutdown(self) -> None:
        """Stop the lanes (after the models are closed)."""
        for ex in self._lanes:
            ex.shutdown(wait=True, cancel_futures=True)



__all__ = ["BACKGROUND_PRIORITY", "Cancelled", "Lease", "OverQuota", "Overloaded",
           "QueueTimeout", "Scheduler", "SchedulerView"]
