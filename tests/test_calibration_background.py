"""The daemon's own calibration under load (calm_edge.calibration.background): one canary at
a time on a loaded model, behind every request, for the models routing is about to use
first; items too long for a busy spell wait for an idle one. Driven step by step on the
loop's core with fake backends, then in a running daemon over its socket."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from calm_edge.calibration.background import BackgroundCalibration
from calm_edge.config import Settings
from calm_edge.fleet import load_fleet
from calm_edge.knowledge import KnowledgeStore
from calm_edge.runtime import Core, build_core, close_core
from calm_edge.testing.fakes import FakeFactory, FixedClassifier, chat_request, serve_to_end
from tests.test_loop import two_model_fleet

LOOP = "[loop]\nexplore_epsilon = 0.0\n"
UNDER_LOAD = {"auto": "true", "idle_s": "3600", "quick_per_domain": "1",
              "under_load_item_s": "30", "under_load_share": "1.0"}


class Bench:
    """The loop's core with a knowledge store (so a calibrator) over fake backends."""

    def __init__(self, settings: Settings, factory: FakeFactory, tmp_path: Path) -> None:
        self.settings, self.factory, self.tmp_path = settings, factory, tmp_path
        self.core: Core | None = None

    async def start(self) -> BackgroundCalibration:
        self.store = KnowledgeStore(self.tmp_path / "k.db", retention_days=1,
                                    max_requests=1000)
        await self.store.open()
        self.core = build_core(self.settings, load_fleet(self.settings.fleet_path),
                               self.factory, FixedClassifier("code"), store=self.store,
                               memory_probe=lambda: 0, rng=random.Random(1),
                               budget_bytes=1 << 30)
        await self.core.residency.scan()
        assert self.core.background is not None
        return self.core.background

    async def ask(self, i: int, model: str = "auto") -> str:
        assert self.core is not None
        a = await serve_to_end(self.core.orchestrator,
                               chat_request(f"r{i}", "code: sort a list", model=model))
        return a.model

    def canaries(self, model: str) -> int:
        assert self.core is not None
        cal = self.core.orchestrator.calibration.get(model)
        return cal.canaries if cal is not None else 0

    async def stop(self) -> None:
        assert self.core is not None
        await close_core(self.core)
        self.store.close()


@pytest.fixture
def two_models(make_settings: Callable[..., Settings], tmp_path: Path,
               tiny_gguf: Path) -> Callable[..., Settings]:
    fleet, models = two_model_fleet(tmp_path, tiny_gguf)
    return lambda **cal: make_settings(LOOP, calibration={**UNDER_LOAD, **cal}, paths={
        "fleet": str(fleet), "models_dir": str(models)})


def test_background_calibration_under_load_takes_canaries_on_loaded_models_only(
        two_models: Callable[..., Settings], tmp_path: Path) -> None:
    """Nothing is loaded for it; one canary per step, the cheapest domain first; the
    partial calibration reaches the loop at once; the quick plan ends it under load
    (the load timings and the full plan wait for an idle spell)."""
    factory = FakeFactory(answer_tokens=6)

    async def main() -> None:
        b = Bench(two_models(), factory, tmp_path)
        bg = await b.start()
        assert await bg.step() is None           # nothing loaded: nothing to do
        assert factory.loads == []
        await b.ask(0, model="backup")
        did = await bg.step()
        assert did is not None and did.startswith("backup: ") and "under load" in did
        assert "factual" in did                  # round 1, the shortest max_tokens first
        assert factory.loads == ["backup"]       # no load, no eviction for calibration
        assert b.canaries("backup") == 1 and b.canaries("fast") == 0
        assert b.core is not None
        cal = b.core.orchestrator.calibration["backup"]
        assert not cal.complete and cal.load is None
        steps = [await bg.step() for _ in range(6)]
        assert steps[-1] is None                 # the quick plan is done under load
        per_domain = {d: s.total for d, s in cal.domains.items()}
        assert set(per_domain) == {"factual"}
        final = b.core.orchestrator.calibration["backup"]
        assert final.canaries == sum(1 for s in steps if s is not None) + 1
        assert all(s.total == 1 for s in final.domains.values())
        assert bg.under_load_items == final.canaries
        assert "fast" not in b.core.orchestrator.calibration
        await b.stop()

    asyncio.run(main())


def test_background_calibration_under_load_a_request_waits_for_one_item_at_most(
        two_models: Callable[..., Settings], tmp_path: Path) -> None:
    """A request that arrives while an item runs is served when that item ends, before
    the next item starts."""
    factory = FakeFactory(answer_tokens=6)

    async def main() -> list[str]:
        b = Bench(two_models(), factory, tmp_path)
        bg = await b.start()
        await b.ask(0, model="backup")
        factory.token_delay_s = 0.05  # the canary takes a while: the request arrives during it

        async def two_items() -> None:
            await bg.step()
            await bg.step()

        items = asyncio.create_task(two_items())
        assert b.core is not None
        backend = next(x for x in factory.backends if x.spec.name == "backup")
        while backend.active == 0:  # noqa: ASYNC110 - set on the lane's thread
            await asyncio.sleep(0.01)   # (the first item is generating)
        await b.ask(1, model="backup")
        await items
        order = ["request" if any("sort a list" in m.content for m in (c.messages or ()))
                 else "canary" for c in backend.calls]
        await b.stop()
        return order

    assert asyncio.run(main()) == ["request", "canary", "request", "canary"]


def test_background_calibration_under_load_does_not_start_an_item_predicted_too_long(
        two_models: Callable[..., Settings], tmp_path: Path) -> None:
    factory = FakeFactory(answer_tokens=6, sim_token_ms={"backup": 5000.0})

    async def main() -> None:
        b = Bench(two_models(under_load_item_s="0.2"), factory, tmp_path)
        bg = await b.start()
        await b.ask(0, model="backup")  # measured here: 5 s a token
        calls = len(factory.backends[0].calls)
        assert await bg.step() is None  # every canary is predicted far past 0.2 s
        assert len(factory.backends[0].calls) == calls
        assert b.canaries("backup") == 0
        await b.stop()

    asyncio.run(main())


def test_background_calibration_under_load_drops_an_item_that_runs_too_long(
        two_models: Callable[..., Settings], tmp_path: Path) -> None:
    """Predicted short, but really slow: the canary is stopped at under_load_item_s, not
    recorded, and not tried again under load (the next step takes another one)."""
    factory = FakeFactory(answer_tokens=6)

    async def main() -> None:
        b = Bench(two_models(under_load_item_s="0.2"), factory, tmp_path)
        bg = await b.start()
        await b.ask(0, model="backup")  # measured: 1 ms a token (what the fake reports)
        factory.token_delay_s, factory.answer_tokens = 0.1, 1000  # really 100 ms
        did = await bg.step()
        assert did is not None and "left for an idle spell" in did, did
        assert b.canaries("backup") == 0
        first = did.split(": ")[1]
        again = await bg.step()
        assert again is not None and first not in again  # another canary, not that one
        assert factory.backends[0].produced[-1] < 1000   # stopped, not run to the end
        await b.stop()

    asyncio.run(main())


def test_background_calibration_takes_the_models_routing_uses_first(
        two_models: Callable[..., Settings], tmp_path: Path) -> None:
    factory = FakeFactory(answer_tokens=6)

    async def main() -> None:
        b = Bench(two_models(), factory, tmp_path)
        bg = await b.start()
        for i in range(3):
            await b.ask(i, model="backup")
        await b.ask(3, model="fast")
        assert bg.pending() == ["backup", "fast"]  # routing asked for 'backup' more
        did = await bg.step()
        assert did is not None and did.startswith("backup")
        bg.calibrate_first("fast")                 # e.g. a model just added
        assert bg.pending() == ["fast", "backup"]
        did = await bg.step()
        assert did is not None and did.startswith("fast")
        await b.stop()

    asyncio.run(main())


def test_background_calibration_under_load_in_the_daemon(
        make_settings: Callable[..., Settings]) -> None:
    """Requests keep coming (never idle for idle_s): the daemon still calibrates the model
    they use, one canary between requests, and status says so."""
    from tests.conftest import run_daemon, uds_client

    s = make_settings(LOOP, calibration=UNDER_LOAD)
    factory = FakeFactory(answer_tokens=3)
    with run_daemon(s, factory, memory_probe=lambda: 0) as daemon, uds_client(s) as c:
        deadline = time.monotonic() + 60
        st: dict[str, object] = {}
        while time.monotonic() < deadline:
            r = c.post("/v1/chat/completions", json={
                "model": "auto", "max_tokens": 4, "calm": {"cache": False},
                "messages": [{"role": "user", "content": "hello"}]})
            assert r.status_code == 200
            st = c.get("/calm/status").json()["calibration"]
            models = st["models"]
            assert isinstance(models, dict)
            if any(m and m["canaries"] >= 2 for m in models.values()):
                break
        assert st["under_load"] is True
        assert isinstance(st["under_load_items"], int) and st["under_load_items"] >= 2, st
        assert daemon.orchestrator is not None
        assert all(not cal.complete for cal in daemon.orchestrator.calibration.values())
