"""Property: under any interleaving of requests, the resident set stays within the RAM
budget and no model in use is ever evicted (the scheduler over Residency, fake backends);
and a model is not loaded, evicted and loaded again while requests for it wait, except
when the request first in line has used up its collation allowance."""

from __future__ import annotations

import asyncio
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_edge.backends.base import ModelState
from calm_edge.config import RuntimeConfig
from calm_edge.fleet import load_fleet, verify
from calm_edge.residency import ModelUnavailable, Residency
from calm_edge.scheduler import Scheduler
from calm_edge.testing.fakes import FakeFactory
from calm_edge.testing.tiny_gguf import write_tiny_gguf
from tests.conftest import model_entry

# Different contexts give different KV caches, so different footprints (~9 to ~25 MiB).
CONTEXTS = {"m512": 512, "m4k": 4096, "m8k": 8192, "m16k": 16384}


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("propfleet")
    gguf = write_tiny_gguf(d / "tiny.gguf")
    body = ""
    for name, ctx in CONTEXTS.items():
        shutil.copy(gguf, d / f"{name}.gguf")
        body += model_entry(name, f"{name}.gguf", d / f"{name}.gguf", n_ctx=ctx)
    (d / "fleet.toml").write_text(body)
    for spec in load_fleet(d / "fleet.toml").models:
        verify(d, spec)
    return d / "fleet.toml", d


ops = st.lists(st.tuples(st.sampled_from(sorted(CONTEXTS)), st.integers(0, 4),
                         st.integers(0, 3)), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, budget_share=st.floats(0.45, 0.9))
def test_residency_never_exceeds_budget_nor_evicts_in_use(
        fleet_dir: tuple[Path, Path], ops: list[tuple[str, int, int]],
        budget_share: float) -> None:
    fleet_path, models = fleet_dir
    factory = FakeFactory()

    async def main() -> None:
        pool = ThreadPoolExecutor(2)
        res = Residency(load_fleet(fleet_path), models, RuntimeConfig(n_batch=64), 1 << 40,
                        factory, pool, memory_probe=lambda: 0)
        sched = Scheduler(res, lanes=2, capacity=100, prefetch=False)
        await res.scan()
        sizes = {n: s.charged_bytes for n, s in res.slots.items()}
        res.budget_bytes = int(sum(sizes.values()) * budget_share)
        assert res.budget_bytes >= max(sizes.values())
        in_use: dict[str, int] = {}
        violations: list[str] = []

        def check() -> None:
            resident = [s for s in res.slots.values() if s.state is ModelState.READY
                        or (s.state is ModelState.LOADING and s.reserved)]
            if sum(s.charged_bytes for s in resident) > res.budget_bytes:
                violations.append(f"over budget: {[s.spec.name for s in resident]}")
            for name, n in in_use.items():
                slot = res.slots[name]
                if n and (slot.state is not ModelState.READY or slot.backend is None
                          or getattr(slot.backend, "closed", False)):
                    violations.append(f"{name} evicted while in use")

        async def request(name: str, hold: int, delay: int) -> None:
            for _ in range(delay):
                await asyncio.sleep(0)
            try:
                lease = await sched.acquire(name)
            except ModelUnavailable:
                check()
                return  # the budget was held by models in use: refused, not overrun
            in_use[name] = in_use.get(name, 0) + 1
            check()
            for _ in range(hold):
                await asyncio.sleep(0)
                check()
            in_use[name] -= 1
            sched.release(lease)
            check()

        await asyncio.gather(*(request(n, h, d) for n, h, d in ops))
        check()
        await sched.aclose()
        await res.close_all()
        sched.shutdown()
        pool.shutdown()
        assert not violations, violations

    asyncio.run(main())


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(models=st.lists(st.sampled_from(sorted(CONTEXTS)), min_size=1, max_size=20))
def test_scheduler_no_thrash_while_requests_wait(fleet_dir: tuple[Path, Path],
                                                 models: list[str]) -> None:
    """Room for one model at a time; a burst of requests queues behind a running one. With
    collation (its bound not reached), each model is loaded once for the whole burst: no
    model is loaded, evicted and loaded again while requests for it wait."""
    fleet_path, models_dir = fleet_dir
    factory = FakeFactory()

    async def main() -> list[str]:
        pool = ThreadPoolExecutor(2)
        res = Residency(load_fleet(fleet_path), models_dir, RuntimeConfig(n_batch=64),
                        1 << 40, factory, pool, memory_probe=lambda: 0)
        await res.scan()
        res.budget_bytes = max(s.charged_bytes for s in res.slots.values())
        sched = Scheduler(res, lanes=1, capacity=100, prefetch=False,
                          collate_max_bypass=len(models) + 1, collate_max_wait_s=1e9,
                          clock=lambda: 0.0)
        first = await sched.acquire(models[0])

        async def request(name: str) -> None:
            sched.release(await sched.acquire(name))

        tasks = [asyncio.create_task(request(n)) for n in models]
        for _ in range(10):
            await asyncio.sleep(0)
        sched.release(first)
        await asyncio.gather(*tasks)
        await sched.aclose()
        await res.close_all()
        sched.shutdown()
        pool.shutdown()
        return factory.loads

    loads = asyncio.run(main())
    assert sorted(loads) == sorted(set(models)), loads
