"""The loop's owner: snapshot -> Plan -> Execute for each request.

Runs on the event loop. Plan is a pure function of the snapshot taken here; Execute does
the work. (The QoS-aware MAPE-K stages plug in between the snapshot and Execute.)
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from calm_edge.backends.base import GenerationRequest, GenerationStats, ModelState
from calm_edge.execute import Attempt, Executor, Outcome
from calm_edge.fleet import Fleet
from calm_edge.plan import Candidate, Plan, plan_route
from calm_edge.residency import Residency


@dataclass(frozen=True)
class Answer:
    """How a request was served; the last item `Orchestrator.run` yields."""

    model: str
    reason: str
    stats: GenerationStats
    failed_attempts: tuple[Attempt, ...]
    wait_s: float
    latency_s: float


class Orchestrator:
    def __init__(self, fleet: Fleet, residency: Residency, executor: Executor,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet, self.residency, self.executor, self._clock = fleet, residency, executor, clock

    def candidates(self) -> list[Candidate]:
        now = self._clock()
        out = []
        for name, slot in self.residency.slots.items():
            q = slot.spec.quality
            out.append(Candidate(
                name=name,
                available=slot.unavailable_reason(now) is None,
                resident=slot.state is ModelState.READY,
                prior_quality=sum(q.values()) / len(q) if q else 0.0,
            ))
        return out

    def plan(self, model: str) -> Plan:
        """Pure decision over the current snapshot. Raises NoModelAvailable."""
        return plan_route(model, self.candidates(), self.fleet.default_model)

    async def run(self, plan: Plan, request: GenerationRequest,
                  ) -> AsyncGenerator[str | Answer, None]:
        """Yield text deltas, then one Answer. See Executor.run for the errors."""
        t0 = self._clock()
        gen = self.executor.run(plan, request)
        try:
            async for item in gen:
                if isinstance(item, Outcome):
                    reason = plan.reason if item.model == plan.model else \
                        f"fallback after {', '.join(a.model for a in item.failed_attempts)} failed"
                    yield Answer(item.model, reason, item.stats, item.failed_attempts,
                                 item.wait_s, self._clock() - t0)
                else:
                    yield item
        finally:
            await gen.aclose()
