"""The scheduler with fake backends and a fake clock: priority order, refusals (a full
queue, a predicted wait past the deadline), collation within its fairness bound, no
thrash, one generation per model, background work behind requests."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from calm_edge.config import RuntimeConfig
from calm_edge.fleet import load_fleet
from calm_edge.residency import Residency
from calm_edge.scheduler import Cancelled, Lease, Overloaded, QueueTimeout, Scheduler
from calm_edge.testing.fakes import FakeFactory


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(tiny_fleet: tuple[Path, Path], *, lanes: int = 1, capacity: int = 8,
         budget_models: float = 10.0, max_bypass: int = 2, max_wait_s: float = 10.0,
         clock: Clock | None = None) -> tuple[Scheduler, Residency, FakeFactory]:
    fleet_path, models = tiny_fleet
    factory = FakeFactory()
    clock = clock or Clock()
    res = Residency(load_fleet(fleet_path), models, RuntimeConfig(n_batch=64), 1 << 40,
                    factory, ThreadPoolExecutor(2), clock=clock, memory_probe=lambda: 0)
    sched = Scheduler(res, lanes, capacity, collate_max_bypass=max_bypass,
                      collate_max_wait_s=max_wait_s, prefetch=False, clock=clock)
    return sched, res, factory


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_scheduler_orders_by_priority_and_refuses_when_full(
        tiny_fleet: tuple[Path, Path]) -> None:
    async def main() -> list[str]:
        sched, res, _ = make(tiny_fleet, capacity=2)
        await res.scan()
        order: list[str] = []
        first = await sched.acquire("tiny-chat")

        async def job(name: str, prio: int) -> None:
            lease = await sched.acquire("tiny-chat", priority=prio)
            order.append(name)
            sched.release(lease)

        low = asyncio.create_task(job("low", 0))
        high = asyncio.create_task(job("high", 5))
        await settle()
        with pytest.raises(Overloaded) as ei:
            await sched.acquire("tiny-chat", priority=9)
        assert ei.value.retry_after_s >= 1 and sched.rejected["queue_full"] == 1
        sched.release(first)
        await asyncio.gather(low, high)
        assert not sched.busy()
        await sched.aclose()
        sched.shutdown()
        return order

    assert asyncio.run(main()) == ["high", "low"]


def test_scheduler_one_generation_per_model(tiny_fleet: tuple[Path, Path]) -> None:
    """Two lanes, two requests for one model: the second waits for the model, not a lane;
    a request for the other model takes the free lane meanwhile."""
    async def main() -> None:
        sched, res, _ = make(tiny_fleet, lanes=2)
        await res.scan()
        a = await sched.acquire("tiny-chat")
        second = asyncio.create_task(sched.acquire("tiny-chat"))
        other = await sched.acquire("tiny-base")
        await settle()
        assert not second.done()
        sched.release(a)
        b = await second
        assert b.slot.in_use == 1
        for lease in (b, other):
            sched.release(lease)
        await sched.aclose()
        sched.shutdown()

    asyncio.run(main())


def test_scheduler_refuses_when_the_predicted_wait_exceeds_the_deadline(
        tiny_fleet: tuple[Path, Path]) -> None:
    """Wait-aware admission: 30 s of predicted work ahead and a 10 s deadline is a 429
    with Retry-After at once, not a timeout later; a request that can make it waits."""
    clock = Clock()

    async def main() -> None:
        sched, res, _ = make(tiny_fleet, clock=clock)
        await res.scan()
        running = await sched.acquire("tiny-chat", predicted_s=20.0)
        queued = asyncio.create_task(sched.acquire("tiny-chat", predicted_s=10.0,
                                                   deadline_s=clock.t + 100))
        await settle()
        assert sched.predicted_wait_s() == pytest.approx(30.0)
        with pytest.raises(Overloaded, match="predicted wait") as ei:
            await sched.acquire("tiny-base", predicted_s=1.0, deadline_s=clock.t + 10)
        assert ei.value.retry_after_s == pytest.approx(30.0)
        assert sched.rejected["predicted_wait"] == 1
        clock.t += 15  # the running one is predicted to need 5 s more
        assert sched.predicted_wait_s() == pytest.approx(15.0)
        ok = asyncio.create_task(sched.acquire("tiny-base", predicted_s=1.0,
                                               deadline_s=clock.t + 20))
        await settle()
        sched.release(running)
        lease = await queued
        sched.release(lease)
        sched.release(await ok)
        await sched.aclose()
        sched.shutdown()

    asyncio.run(main())


def test_scheduler_deadline_and_cancellation_while_queued(
        tiny_fleet: tuple[Path, Path]) -> None:
    async def main() -> None:
        sched, res, _ = make(tiny_fleet)
        await res.scan()
        loop = asyncio.get_running_loop()
        busy = await sched.acquire("tiny-chat")
        with pytest.raises(QueueTimeout):
            await sched.acquire("tiny-base", deadline_s=sched._clock() + 0.0)
        gone = asyncio.Event()
        loop.call_later(0.01, gone.set)
        with pytest.raises(Cancelled):
            await sched.acquire("tiny-base", gone=gone)
        assert sched.waiting == 0
        sched.release(busy)
        await sched.aclose()
        sched.shutdown()

    asyncio.run(main())


def _one_at_a_time_budget(res: Residency) -> None:
    one = max(s.charged_bytes for s in res.slots.values())
    res.budget_bytes = one + one // 2


def test_scheduler_collates_requests_for_the_resident_model(
        tiny_fleet: tuple[Path, Path]) -> None:
    """Only one model fits. With tiny-chat running and [base, chat, chat] queued, the two
    chat requests go first (their model is resident), then base: two loads instead of
    four."""
    async def main() -> tuple[list[str], list[str]]:
        sched, res, factory = make(tiny_fleet)
        await res.scan()
        _one_at_a_time_budget(res)
        order: list[str] = []
        running = await sched.acquire("tiny-chat")

        async def job(model: str) -> None:
            lease = await sched.acquire(model)
            order.append(model)
            sched.release(lease)

        tasks = [asyncio.create_task(job(m)) for m in ("tiny-base", "tiny-chat",
                                                       "tiny-chat")]
        await settle()
        sched.release(running)
        await asyncio.gather(*tasks)
        await sched.aclose()
        sched.shutdown()
        return order, factory.loads

    order, loads = asyncio.run(main())
    assert order == ["tiny-chat", "tiny-chat", "tiny-base"]
    assert loads == ["tiny-chat", "tiny-base"]


def test_scheduler_collation_is_bounded(tiny_fleet: tuple[Path, Path]) -> None:
    """A request that needs a swap is passed over at most `collate_max_bypass` times."""
    async def main() -> list[str]:
        sched, res, _ = make(tiny_fleet, max_bypass=2)
        await res.scan()
        _one_at_a_time_budget(res)
        order: list[str] = []
        running = await sched.acquire("tiny-chat")

        async def job(model: str) -> None:
            lease = await sched.acquire(model)
            order.append(model)
            sched.release(lease)

        tasks = [asyncio.create_task(job(m)) for m in
                 ("tiny-base", "tiny-chat", "tiny-chat", "tiny-chat", "tiny-chat")]
        await settle()
        sched.release(running)
        await asyncio.gather(*tasks)
        await sched.aclose()
        sched.shutdown()
        return order

    assert asyncio.run(main()) == ["tiny-chat", "tiny-chat", "tiny-base", "tiny-chat",
                                   "tiny-chat"]


def test_scheduler_collation_stops_after_the_wait_bound(tiny_fleet: tuple[Path, Path]) -> None:
    clock = Clock()

    async def main() -> list[str]:
        sched, res, _ = make(tiny_fleet, max_bypass=10, max_wait_s=5.0, clock=clock)
        await res.scan()
        _one_at_a_time_budget(res)
        order: list[str] = []
        running = await sched.acquire("tiny-chat")

        async def job(model: str) -> None:
            lease = await sched.acquire(model)
            order.append(model)
            clock.t += 3.0  # each generation takes 3 s
            sched.release(lease)

        tasks = [asyncio.create_task(job(m)) for m in
                 ("tiny-base", "tiny-chat", "tiny-chat", "tiny-chat")]
        await settle()
        sched.release(running)
        await asyncio.gather(*tasks)
        await sched.aclose()
        sched.shutdown()
        return order

    # base waited 3 s after the first chat went ahead, 6 s after the second: then its turn.
    assert asyncio.run(main()) == ["tiny-chat", "tiny-chat", "tiny-base", "tiny-chat"]


def test_scheduler_background_work_waits_and_is_not_busy(
        tiny_fleet: tuple[Path, Path]) -> None:
    async def main() -> None:
        sched, res, _ = make(tiny_fleet)
        await res.scan()
        bg: Lease = await sched.acquire("tiny-chat", background=True)
        assert not sched.busy()
        sched.release(bg)
        req = await sched.acquire("tiny-chat")
        waiting_bg = asyncio.create_task(sched.acquire("tiny-base", background=True))
        queued = asyncio.create_task(sched.acquire("tiny-base", priority=-5))
        await settle()
        sched.release(req)
        first = await queued  # a request, even of low priority, before background work
        assert not waiting_bg.done()
        sched.release(first)
        sched.release(await waiting_bg)
        await sched.aclose()
        sched.shutdown()

    asyncio.run(main())


def test_scheduler_resident_only_work_loads_and_evicts_nothing(
        tiny_fleet: tuple[Path, Path]) -> None:
    """Background work that asks for a resident model only: refused when its turn comes and
    the model is not loaded (nothing loaded, the lane goes back), granted when it is."""
    from calm_edge.residency import ModelUnavailable

    async def main() -> None:
        sched, res, factory = make(tiny_fleet)
        await res.scan()
        with pytest.raises(ModelUnavailable, match="not loaded"):
            await sched.acquire("tiny-base", background=True, resident_only=True)
        assert factory.loads == []
        sched.release(await sched.acquire("tiny-chat"))  # a request loads it
        lease = await sched.acquire("tiny-chat", background=True, resident_only=True)
        assert not lease.loaded and factory.loads == ["tiny-chat"]
        sched.release(lease)
        other = await sched.acquire("tiny-base")  # the lane came back
        sched.release(other)
        await sched.aclose()
        sched.shutdown()

    asyncio.run(main())


def test_scheduler_overlapping_sees_ended_generations_whose_lease_is_held(
        tiny_fleet: tuple[Path, Path]) -> None:
    """Energy sharing asks for the other generations of a window. One that has ended but
    whose lease is not released yet still overlapped (missing it gave the first answer to
    finish the whole board's power for the overlap); running ones end at the window's end;
    the window's own generation is not another."""
    async def main() -> None:
        sched, res, _ = make(tiny_fleet, lanes=3)
        await res.scan()
        a = await sched.acquire("tiny-chat")
        b = await sched.acquire("tiny-base")
        a.gen_start_s, a.gen_end_s = 10.0, 12.0     # ended, lease still held
        b.gen_start_s = 10.5                         # still running
        assert sorted(sched.overlapping(11.0, 13.0)) == [(10.0, 12.0), (10.5, 13.0)]
        assert sched.overlapping(10.0, 12.0) == [(10.5, 12.0)]  # a's own window
        assert sched.overlapping(12.5, 13.0) == [(10.5, 13.0)]  # a ended before it
        sched.release(a)
        assert (10.0, 12.0) in sched.overlapping(11.0, 13.0)  # released: still counted once
        assert len(sched.overlapping(11.0, 13.0)) == 2
        sched.release(b)

    asyncio.run(main())
