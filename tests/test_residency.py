from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from calm_edge.backends.base import ChatMessage, GenerationRequest, ModelState, SamplingParams
from calm_edge.config import RuntimeConfig, Settings
from calm_edge.events import Delta, Final
from calm_edge.execute import Abort, AllCandidatesFailed
from calm_edge.fleet import load_fleet
from calm_edge.residency import ModelUnavailable, Residency
from calm_edge.runtime import Core, build_core, close_core
from calm_edge.scheduler import Scheduler
from calm_edge.testing.fakes import FakeFactory, FixedClassifier, chat_request, serve_to_end


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


LANE = ThreadPoolExecutor(1, thread_name_prefix="test-lane")


def make(tiny_fleet: tuple[Path, Path], factory: FakeFactory, budget: int,
         clock: Clock | None = None) -> tuple[Residency, ThreadPoolExecutor]:
    fleet_path, models = tiny_fleet
    pool = ThreadPoolExecutor(4)
    r = Residency(load_fleet(fleet_path), models, RuntimeConfig(n_batch=64), budget, factory,
                  pool, clock=clock or Clock(), memory_probe=lambda: 0)
    return r, pool


async def core_for(settings: Settings, factory: FakeFactory) -> Core:
    core = build_core(settings, load_fleet(settings.fleet_path), factory,
                      FixedClassifier("factual"), memory_probe=lambda: 0)
    await core.residency.scan()
    return core


REQ = GenerationRequest(SamplingParams(max_tokens=3), messages=(ChatMessage("user", "hi"),))


def test_residency_concurrent_requests_share_one_load(tiny_fleet: tuple[Path, Path]) -> None:
    factory = FakeFactory(load_delay_s=0.05)

    async def main() -> None:
        r, pool = make(tiny_fleet, factory, 1 << 30)
        await r.scan()
        slots = await asyncio.gather(*(r.ensure_ready("tiny-chat", LANE) for _ in range(8)))
        assert all(s.state is ModelState.READY for s in slots)
        assert factory.loads == ["tiny-chat"]
        await r.close_all()
        assert factory.backends[0].closed
        pool.shutdown()

    asyncio.run(main())


def test_residency_evicts_idle_model_to_fit_budget(tiny_fleet: tuple[Path, Path]) -> None:
    factory = FakeFactory()
    clock = Clock()

    async def main() -> None:
        r, pool = make(tiny_fleet, factory, 1 << 30, clock)
        await r.scan()
        one = max(s.charged_bytes for s in r.slots.values())
        r.budget_bytes = one + one // 2  # room for one model at a time
        sched = Scheduler(r, lanes=2, capacity=8, prefetch=False, clock=clock)
        lease = await sched.acquire("tiny-chat")
        clock.t += 1
        sched.release(lease)
        lease = await sched.acquire("tiny-base")
        assert r.resident() == ["tiny-base"]
        assert r.used_bytes() <= r.budget_bytes
        # tiny-base is leased: loading tiny-chat now cannot evict it.
        with pytest.raises(ModelUnavailable, match="in use or pinned"):
            await sched.acquire("tiny-chat")
        sched.release(lease)
        await sched.aclose()
        sched.shutdown()
        assert factory.loads == ["tiny-chat", "tiny-base"]
        assert factory.backends[0].closed and not factory.backends[1].closed
        await r.close_all()
        pool.shutdown()

    asyncio.run(main())


def test_residency_failed_load_backs_off(tiny_fleet: tuple[Path, Path]) -> None:
    factory = FakeFactory(fail_loads={"tiny-chat"})
    clock = Clock()

    async def main() -> None:
        r, pool = make(tiny_fleet, factory, 1 << 30, clock)
        await r.scan()
        with pytest.raises(ModelUnavailable, match="failed to load"):
            await r.ensure_ready("tiny-chat", LANE)
        assert r.slots["tiny-chat"].state is ModelState.FAILED
        with pytest.raises(ModelUnavailable, match="retrying in"):
            await r.ensure_ready("tiny-chat", LANE)
        assert factory.loads == ["tiny-chat"]  # no retry inside the back-off
        clock.t += 60
        factory.fail_loads.clear()
        assert (await r.ensure_ready("tiny-chat", LANE)).state is ModelState.READY
        await r.close_all()
        pool.shutdown()

    asyncio.run(main())


def test_serve_falls_back_when_chosen_model_fails(
        make_settings: Callable[..., Settings]) -> None:
    """The planned model fails before answering: the next candidate answers, and the
    failure is in the answer; the failed model is taken out for a back-off."""
    factory = FakeFactory(fail_after_tokens={"tiny-chat": 0}, answer_tokens=3)

    async def main() -> None:
        core = await core_for(make_settings(), factory)
        a = await serve_to_end(core.orchestrator, chat_request("r1", "hi"))
        assert a.model == "tiny-base"
        assert [f.model for f in a.failed_attempts] == ["tiny-chat"]
        assert "exploded" in a.failed_attempts[0].error
        await asyncio.sleep(0.05)
        assert core.residency.slots["tiny-chat"].state is ModelState.FAILED
        factory.fail_after_tokens["tiny-base"] = 0
        with pytest.raises(AllCandidatesFailed, match="tiny-base exploded"):
            await serve_to_end(core.orchestrator, chat_request("r2", "hi"))
        await close_core(core)

    asyncio.run(main())


def test_serve_closing_the_stream_cancels_generation(
        make_settings: Callable[..., Settings]) -> None:
    factory = FakeFactory(token_delay_s=0.01)

    async def main() -> None:
        core = await core_for(make_settings(), factory)
        orch = core.orchestrator
        events = orch.serve(chat_request("r1", "hi", model="tiny-chat", max_tokens=1000),
                            Abort())
        first = await events.__anext__()
        assert first == Delta("tiny-chat-0 ")
        await events.aclose()  # returns only once the worker thread has left the backend
        slot = core.residency.slots["tiny-chat"]
        backend = factory.backends[0]
        assert slot.in_use == 0 and not core.scheduler.busy()
        assert len(backend.calls) == 1
        assert backend.active == 0 and len(backend.produced) == 1
        assert backend.produced[0] < 1000
        # A client that walks away mid-stream, then the next request on the same model:
        # the backend never runs two generations at once.
        events = orch.serve(chat_request("r2", "hi", model="tiny-chat", max_tokens=1000),
                            Abort())
        await events.__anext__()
        del events  # abandoned, not closed: the finalizer hook closes it later
        items = [x async for x in orch.serve(chat_request("r3", "hi", model="tiny-chat",
                                                          max_tokens=3), Abort())]
        assert isinstance(items[-1], Final)
        assert backend.max_active == 1
        await close_core(core)

    asyncio.run(main())


# -- memory that RSS misses (layers on a GPU) --------------------------------------------------

class FakeDeviceMemory:
    """A DeviceMemoryReader whose reading the test moves (None: the reading fails)."""

    def __init__(self, source: str, unified: bool) -> None:
        self.source, self.unified = source, unified
        self.used: int | None = 1 << 30

    def used_bytes(self) -> int | None:
        return self.used


class GrowingFactory(FakeFactory):
    """Loads that allocate: RSS grows by `rss_bytes`, device memory by `device_bytes`."""

    def __init__(self, device: FakeDeviceMemory, rss: list[int], rss_bytes: int,
                 device_bytes: int) -> None:
        super().__init__()
        self.device, self.rss = device, rss
        self.rss_bytes, self.device_bytes = rss_bytes, device_bytes

    def __call__(self, spec, path, runtime):
        self.rss[0] += self.rss_bytes
        if self.device.used is not None:
            self.device.used += self.device_bytes
        return super().__call__(spec, path, runtime)


def gpu_residency(tiny_fleet: tuple[Path, Path], factory: FakeFactory, rss: list[int],
                  device: FakeDeviceMemory | None, gpu_layers: int = -1,
                  ) -> tuple[Residency, ThreadPoolExecutor]:
    fleet_path, models = tiny_fleet
    pool = ThreadPoolExecutor(2)
    r = Residency(load_fleet(fleet_path), models,
                  RuntimeConfig(n_batch=64, n_gpu_layers=gpu_layers), 1 << 34, factory, pool,
                  clock=Clock(), memory_probe=lambda: rss[0], device_memory=device)
    return r, pool


@pytest.mark.parametrize(("source", "unified", "expected_mib", "label"), [
    ("memavailable", True, 3000, "memavailable"),  # unified: max(RSS 400, device 3000)
    ("nvml", False, 3400, "rss+nvml"),             # discrete: RSS 400 + device 3000
])
def test_residency_gpu_memory_is_charged_from_the_device_reading(
        tiny_fleet: tuple[Path, Path], source: str, unified: bool, expected_mib: int,
        label: str) -> None:
    """Measured on an H200 (issue 13): RSS saw 443 MB of a ~2 GB fully offloaded model.
    The device reading sees the rest, and the charge follows it."""
    MiB = 1 << 20
    device = FakeDeviceMemory(source, unified)
    rss = [100 * MiB]
    factory = GrowingFactory(device, rss, 400 * MiB, 3000 * MiB)

    async def main() -> None:
        r, pool = gpu_residency(tiny_fleet, factory, rss, device)
        await r.scan()
        slot = await r.ensure_ready("tiny-chat", LANE)
        assert slot.measured_bytes == expected_mib * MiB
        assert slot.memory_source == label
        assert slot.charged_bytes >= expected_mib * MiB > slot.estimated_bytes
        # The first generation's buffers (on the GPU) are counted too.
        device.used = (device.used or 0) + 200 * MiB
        r.measure_after_generation(slot)
        assert slot.measured_bytes == (expected_mib + 200) * MiB
        assert r.used_bytes() >= slot.measured_bytes
        await r.close_all()
        pool.shutdown()

    asyncio.run(main())


def test_residency_missing_gpu_reading_falls_back_to_the_estimate(
        tiny_fleet: tuple[Path, Path]) -> None:
    MiB = 1 << 20
    rss = [100 * MiB]
    failing = FakeDeviceMemory("nvml", False)
    failing.used = None

    async def main() -> None:
        for device in (failing, None):  # a reading that fails; no reader at all
            factory = GrowingFactory(failing, rss, 1 * MiB, 0)
            r, pool = gpu_residency(tiny_fleet, factory, rss, device)
            await r.scan()
            slot = await r.ensure_ready("tiny-chat", LANE)
            assert slot.memory_source == "estimate"
            assert slot.charged_bytes == slot.estimated_bytes
            await r.close_all()
            pool.shutdown()

    asyncio.run(main())


def test_residency_cpu_runtime_ignores_the_device_reader(tiny_fleet: tuple[Path, Path]) -> None:
    MiB = 1 << 20
    device = FakeDeviceMemory("memavailable", True)
    rss = [0]
    factory = GrowingFactory(device, rss, 5 * MiB, 900 * MiB)  # another process's growth

    async def main() -> None:
        r, pool = gpu_residency(tiny_fleet, factory, rss, device, gpu_layers=0)
        await r.scan()
        slot = await r.ensure_ready("tiny-chat", LANE)
        assert (slot.measured_bytes, slot.memory_source) == (5 * MiB, "rss")
        await r.close_all()
        pool.shutdown()

    asyncio.run(main())


# -- tiers: ready, warm (file in the page cache), cold ------------------------------------

def test_residency_tiers_follow_loads_unloads_and_the_page_cache(
        tiny_fleet: tuple[Path, Path]) -> None:
    fleet_path, models = tiny_fleet
    cached: dict[str, float] = {}

    def page_cache(path: Path) -> float | None:
        return cached.get(path.name, 0.0)

    async def main() -> None:
        for drop in (False, True):
            cached.clear()
            res = Residency(load_fleet(fleet_path), models, RuntimeConfig(n_batch=64),
                            1 << 30, FakeFactory(), ThreadPoolExecutor(2), clock=Clock(),
                            memory_probe=lambda: 0, page_cache=page_cache,
                            drop_page_cache_on_evict=drop)
            await res.scan()
            slot = res.slots["tiny-chat"]
            assert slot.tier == "cold"
            await res.ensure_ready("tiny-chat", LANE)
            assert slot.tier == "ready" and slot.last_load_tier == "cold"
            cached["tiny-chat.gguf"] = 1.0
            await res.unload("tiny-chat")
            if drop:  # the profile drops the pages (boards where they share RAM)
                cached["tiny-chat.gguf"] = 0.0
            await res.refresh_tiers()
            assert slot.tier == ("cold" if drop else "warm")
            await res.ensure_ready("tiny-chat", LANE)
            assert slot.last_load_tier == ("cold" if drop else "warm")
            row = next(m for m in res.snapshot().models if m["name"] == "tiny-chat")
            assert row["tier"] == "ready"
            await res.close_all()

    asyncio.run(main())


def test_residency_budget_cut_at_run_time_changes_tiers_at_once(
        tiny_fleet: tuple[Path, Path]) -> None:
    """A smaller budget set at run time evicts what no longer fits, and status shows the
    evicted model warm (its pages stay cached) straight away, not at the next refresh."""
    fleet_path, models = tiny_fleet

    async def main() -> None:
        res = Residency(load_fleet(fleet_path), models, RuntimeConfig(n_batch=64), 1 << 30,
                        FakeFactory(), ThreadPoolExecutor(2), clock=Clock(),
                        memory_probe=lambda: 0, page_cache=lambda path: 0.0)
        await res.scan()
        await res.ensure_ready("tiny-chat", LANE)
        await res.ensure_ready("tiny-base", LANE)
        tiers = {m["name"]: m["tier"] for m in res.snapshot().models}
        assert tiers == {"tiny-chat": "ready", "tiny-base": "ready"}
        evicted = await res.set_budget(res.slots["tiny-chat"].charged_bytes)
        assert len(evicted) == 1
        tiers = {m["name"]: m["tier"] for m in res.snapshot().models}
        assert tiers[evicted[0]] == "warm" and list(tiers.values()).count("ready") == 1
        await res.close_all()

    asyncio.run(main())


def test_memory_page_cache_share_sees_dropped_and_read_pages(tmp_path: Path) -> None:
    import os

    from calm_edge.memory import page_cache_share

    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(4 << 20))
    with path.open("rb") as fh:
        os.fsync(fh.fileno())
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    dropped = page_cache_share(path)
    path.read_bytes()
    read = page_cache_share(path)
    assert dropped is not None and read is not None
    assert read == 1.0 and page_cache_share(tmp_path / "missing") is None
    if _fs_type(path) in ("tmpfs", "ramfs"):
        pytest.skip("the file lives in RAM (tmpfs): its pages cannot be dropped")
    assert dropped < 0.5


def _fs_type(path: Path) -> str:
    """The type of the filesystem holding `path` (the longest mount point above it)."""
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind
