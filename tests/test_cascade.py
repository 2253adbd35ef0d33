"""Cascades end to end with fakes: the planner picks a cheap model first, the orchestrator
holds its answer back, judges its token log-probabilities with an acceptor and keeps it or
escalates (calm_edge.confidence, calm_edge.plan, calm_edge.orchestrator)."""

from __future__ import annotations

import asyncio
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from calm_edge.confidence import Acceptor, ModeCut, acceptor_to_json
from calm_edge.config import Settings
from calm_edge.daemon import Daemon, DaemonError
from calm_edge.events import Delta, Final
from calm_edge.execute import Abort
from calm_edge.fleet import load_fleet, verify
from calm_edge.orchestrator import Answer, Orchestrator
from calm_edge.runtime import Core, build_core, close_core
from calm_edge.testing.fakes import FakeFactory, FixedClassifier, chat_request
from tests.conftest import model_entry

LOOP = """
[loop]
explore_epsilon = 0.0
"""

# P(correct) = sigmoid(mean_logprob + 2): 0.87 for a sure answer (-0.05 per token), 0.27
# for an unsure one (-3.0).
ACCEPTOR = Acceptor("small", "code", (1.0,) + (0.0,) * 6, 2.0, (0.0,) * 7,
                    (1.0,) * 7, 0.85, 200, 0.5,
                    {"balanced": ModeCut(0.5, 0.8, 0.97)}, "big", 0.85)
SURE, UNSURE = -0.05, -3.0


def fleet_of_two(tmp_path: Path, tiny_gguf: Path) -> tuple[Path, Path]:
    models = tmp_path / "cmodels"
    models.mkdir()
    for name in ("small", "big"):
        shutil.copy(tiny_gguf, models / f"{name}.gguf")
    fleet = tmp_path / "cfleet.toml"
    fleet.write_text(
        'default_model = "big"\n'
        + model_entry("small", "small.gguf", models / "small.gguf", quality="{ code = 0.3 }")
        + model_entry("big", "big.gguf", models / "big.gguf", quality="{ code = 0.85 }"))
    for spec in load_fleet(fleet).models:
        verify(models, spec)
    return fleet, models


class Cascading:
    def __init__(self, settings: Settings, factory: FakeFactory) -> None:
        self.settings, self.factory = settings, factory
        self.core: Core | None = None

    async def start(self, acceptors: dict[tuple[str, str], Acceptor]) -> Orchestrator:
        self.core = build_core(self.settings, load_fleet(self.settings.fleet_path),
                               self.factory, FixedClassifier("code"), memory_probe=lambda: 0,
                               acceptors=acceptors, rng=random.Random(1),
                               budget_bytes=1 << 30)
        await self.core.residency.scan()
        return self.core.orchestrator

    async def ask(self, i: int, abort: Abort | None = None, deadline_s: float = math.inf,
                  max_tokens: int = 8) -> tuple[list[str], Answer]:
        assert self.core is not None
        deltas: list[str] = []
        req = chat_request(f"r{i}", "code: sort a list", max_tokens=max_tokens,
                           deadline_s=deadline_s)
        async for ev in self.core.orchestrator.serve(req, abort or Abort()):
            if isinstance(ev, Delta):
                deltas.append(ev.text)
            elif isinstance(ev, Final):
                return deltas, ev.value
        raise AssertionError("no Final")

    async def stop(self) -> None:
        assert self.core is not None
        await close_core(self.core)


@pytest.fixture
def cascade_settings(make_settings: Callable[..., Settings], tmp_path: Path,
                     tiny_gguf: Path) -> Settings:
    fleet, models = fleet_of_two(tmp_path, tiny_gguf)
    return make_settings(LOOP, paths={"fleet": str(fleet), "models_dir": str(models)})


def test_cascade_keeps_a_sure_answer_and_escalates_an_unsure_one(
        cascade_settings: Settings) -> None:
    factory = FakeFactory(answer_tokens=6, sim_token_ms={"small": 2.0, "big": 20.0},
                          logprob={"small": SURE})

    async def main() -> None:
        c = Cascading(cascade_settings, factory)
        orch = await c.start({("small", "code"): ACCEPTOR})
        deltas, a = await c.ask(0)
        assert a.model == "small" and a.cascade is not None and "kept" in a.cascade
        assert "cascade small -> big" in a.reason
        # The held answer goes out in one piece once judged.
        assert deltas == ["small-0 small-1 small-2 small-3 small-4 small-5 "]

        factory.logprob["small"] = UNSURE
        deltas, a = await c.ask(1)
        assert a.model == "big" and a.cascade is not None and "-> big" in a.cascade
        # Nothing of the rejected answer reached the client; big's streamed as usual.
        assert all(d.startswith("big-") for d in deltas) and len(deltas) >= 1
        assert "".join(deltas) == " ".join(f"big-{i}" for i in range(6)) + " "
        # Both answers cost: the wait before big's answer includes small's attempt (its
        # simulated prefill alone is 20 tokens x 2 ms).
        assert a.wait_s >= 0.04
        assert orch.cascade_counts == {"small/code": {"accepted": 1, "escalated": 1}}
        view = orch.snapshot()
        assert view.cascades == {"small/code": {"accepted": 1, "escalated": 1}}
        small = orch.knowledge.estimate("small", "code")
        assert small.requests == 2  # the escalated attempt was observed too
        await c.stop()

    asyncio.run(main())


def test_cascade_never_escalates_after_the_client_left(cascade_settings: Settings) -> None:
    factory = FakeFactory(answer_tokens=50, token_delay_s=0.01, logprob={"small": UNSURE})

    async def main() -> None:
        c = Cascading(cascade_settings, factory)
        await c.start({("small", "code"): ACCEPTOR})
        _, a = await c.ask(0, deadline_s=time.monotonic() + 0.1, max_tokens=50)
        assert a.model == "small" and a.stats.finish_reason == "cancelled", a.reason
        assert "kept" in (a.cascade or "")
        big = [b for b in factory.backends if b.spec.name == "big"]
        assert all(not b.produced for b in big)  # big never generated
        await c.stop()

    asyncio.run(main())


def test_no_cascade_without_log_probabilities_or_when_pinned(
        cascade_settings: Settings) -> None:
    factory = FakeFactory(answer_tokens=4, logprob={"small": SURE}, no_logprobs={"small"})

    async def main() -> None:
        c = Cascading(cascade_settings, factory)
        orch = await c.start({("small", "code"): ACCEPTOR})
        # A pinned request is never cascaded.
        req = chat_request("p", "code: x", model="small", max_tokens=4)
        async for ev in orch.serve(req, Abort()):
            if isinstance(ev, Final):
                assert ev.value.cascade is None
        # A backend that gives no log-probabilities: its first cascade answer cannot be
        # judged and escalates; from then on it is not cascaded, and the plan says why.
        _, a = await c.ask(1)
        assert a.model == "big" and "no confidence signals" in (a.cascade or "")
        _, a = await c.ask(2)
        assert a.cascade is None and a.model == "big"
        assert "no cascade from small: its backend gave no token log-probabilities" \
            in a.reason
        await c.stop()

    asyncio.run(main())


def test_daemon_loads_the_cascade_artifact(cascade_settings: Settings, tmp_path: Path,
                                           make_settings: Callable[..., Settings]) -> None:
    path = tmp_path / "cascade.json"
    other = Acceptor("gone", "code", *(ACCEPTOR.weights, ACCEPTOR.bias, ACCEPTOR.mean,
                                       ACCEPTOR.scale, 0.8, 10, 0.5, ACCEPTOR.cuts, "big"))
    path.write_text(json.dumps({"acceptors": [acceptor_to_json(ACCEPTOR),
                                              acceptor_to_json(other)]}))
    fleet = str(cascade_settings.fleet_path)
    models = str(cascade_settings.models_dir)
    s = make_settings(LOOP + f'cascade_file = "{path}"\n',
                      paths={"fleet": fleet, "models_dir": models})
    d = Daemon(s, FakeFactory())
    # Only acceptors for models of this fleet are kept.
    assert set(d._load_acceptors()) == {("small", "code")}
    path.write_text('{"acceptors": [{"model": "small"}]}')
    with pytest.raises(DaemonError, match="not a cascade artifact"):
        d._load_acceptors()
    off = make_settings(LOOP + "cascades = false\n", paths={"fleet": fleet, "models_dir": models})
    assert Daemon(off, FakeFactory())._load_acceptors() == {}
