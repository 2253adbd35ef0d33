"""The daemon's own calibration of the models not yet calibrated on this device: which
model and item next, and when. Owned by the event loop; `run` is its one task.

Two regimes:

- **idle** (no request routed for `calibration.idle_s`): a full calibration of one model at
  a time (Calibrator.run), preempted within a token by a request and resumed at the next
  idle spell; once every model is calibrated, the speed of each in a power state not yet
  timed (Calibrator.measure_speed).
- **under load** (requests keep coming; `calibration.under_load`): one short item at a
  time (Calibrator.run_item): a canary of the quick plan, on a model already loaded that
  has answered here, for the models routing is about to use first (the plans' top
  candidates). It waits behind
  every request (the scheduler's background priority) and is not preempted, so a waiting
  request is delayed by one item at most: items predicted to take longer than
  `under_load_item_s` wait for an idle spell, and one running past it is dropped. Items
  take at most `under_load_share` of the time: after one that took t seconds the next
  waits t x (1 - share) / share.

Until a model is calibrated the loop predicts it from the models measured here
(calm_edge.scaling); each finished item is applied at once (partial calibrations count).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from calm_edge.backends.base import ModelState
from calm_edge.bench.workload import Query
from calm_edge.calibration.results import ModelCalibration
from calm_edge.calibration.runner import CalibrationEvent, Calibrator, Preempted
from calm_edge.config import CalibrationConfig
from calm_edge.residency import ModelUnavailable, Residency
from calm_edge.scaling import MeasuredSpeed

log = logging.getLogger("calm_edge.calibration")
# Seconds before a model with no item short enough under load is looked at again (its
# predictions change as it answers).
RECHECK_S = 60.0


class CalibratedLoop(Protocol):
    """What background calibration reads of the loop and gives back to it
    (calm_edge.orchestrator.Orchestrator)."""

    @property
    def calibration(self) -> Mapping[str, ModelCalibration]: ...

    @property
    def candidate_demand(self) -> Mapping[str, float]: ...

    def idle_s(self) -> float: ...

    def power_key(self) -> tuple[str, float | None, str | None] | None: ...

    def apply_calibration(self, results: Mapping[str, ModelCalibration]) -> None: ...

    def predicted_ms(self, model: str, domain: str, text: str, max_tokens: int) -> float: ...

    def measured_speeds(self) -> Sequence[MeasuredSpeed]: ...


class BackgroundCalibration:
    def __init__(self, calibrator: Calibrator, loop: CalibratedLoop, residency: Residency,
                 config: Callable[[], CalibrationConfig], *,
                 busy: Callable[[], bool], clock: Callable[[], float] = time.monotonic,
                 ) -> None:
        """`config` gives the settings in force (they change on reload); `busy`: requests
        are generating or waiting (the scheduler's)."""
        self._cal, self._loop, self._res = calibrator, loop, residency
        self._config, self._busy, self._clock = config, busy, clock
        self.failed: set[str | tuple[str, str]] = set()  # models; (model, power state)
        self._first: list[str] = []                       # calibrate_first(), in order
        self._next_under_load_s = 0.0
        self._exhausted: dict[str, float] = {}            # model -> no item fits until
        self.under_load_items = 0                         # items done under load

    def calibrate_first(self, name: str) -> None:
        """Calibrate `name` (e.g. a model just added to the fleet) before the others, idle
        or under load; forgets an earlier failure of it."""
        self.failed.discard(name)
        self._exhausted.pop(name, None)
        if name in self._first:
            self._first.remove(name)
        self._first.insert(0, name)

    def pending(self) -> list[str]:
        """Available models not completely calibrated here, in the order they are taken:
        calibrate_first() ones, then by how often routing has them among its top
        candidates, then fleet order."""
        now = self._clock()
        cal, demand = self._loop.calibration, self._loop.candidate_demand
        names = [n for n, sl in self._res.slots.items()
                 if n not in self.failed and sl.unavailable_reason(now) is None
                 and not (n in cal and cal[n].complete)]
        order = {n: i for i, n in enumerate(self._res.slots)}
        first = {n: i for i, n in enumerate(self._first)}
        return sorted(names, key=lambda n: (first.get(n, len(first)), -demand.get(n, 0.0),
                                            order[n]))

    async def run(self) -> None:
        """Poll and calibrate until cancelled."""
        while True:
            cfg = self._config()
            await asyncio.sleep(min(1.0, max(cfg.idle_s / 4, 0.05)))
            if cfg.auto:
                await self.step()

    async def step(self) -> str | None:
        """One decision: calibrate (idle), take one item (under load), or nothing. Returns
        what was done, for logs and tests."""
        cfg = self._config()
        if self._loop.idle_s() >= cfg.idle_s and not self._busy():
            return await self._idle(cfg)
        if cfg.under_load and self._clock() >= self._next_under_load_s:
            return await self._under_load(cfg)
        return None

    async def _idle(self, cfg: CalibrationConfig) -> str | None:
        cal, loop = self._cal, self._loop
        todo = self.pending()
        if todo:
            name = todo[0]
            log.info("idle: calibrating %s on this device", name)
            try:
                await cal.run([name], cfg.canaries_per_domain, quick=False)
            except Preempted:
                log.info("calibration of %s paused: a request arrived", name)
            except Exception as e:
                self.failed.add(name)
                log.error("calibration of %s failed: %s: %s", name, type(e).__name__, e)
            else:
                if name in self._first:
                    self._first.remove(name)
            loop.apply_calibration(await cal.results())
            return f"calibrated {name}"
        state = loop.power_key()
        if state is None:
            return None
        key, now = state[0], self._clock()
        timed = [n for n, sl in self._res.slots.items()
                 if (n, key) not in self.failed and sl.unavailable_reason(now) is None
                 and n in loop.calibration and loop.calibration[n].complete
                 and key not in loop.calibration[n].speeds_by_mode]
        if not timed:
            return None
        name = timed[0]
        log.info("idle: timing %s in power state %s", name, key)
        try:
            await cal.measure_speed(name)
        except Preempted:
            pass
        except Exception as e:
            self.failed.add((name, key))
            log.error("timing %s in power state %s failed: %s: %s", name, key,
                      type(e).__name__, e)
        loop.apply_calibration(await cal.results())
        return f"timed {name} in {key}"

    async def _under_load(self, cfg: CalibrationConfig) -> str | None:
        """One item for the first pending model that is loaded, has answered here (so that
        what an item will take is predicted from its own speed: a prompt's prefill cannot
        be stopped midway) and has an item that fits."""
        max_s = cfg.under_load_item_s
        loop = self._loop
        measured = {m.model for m in loop.measured_speeds()}

        def fits(name: str, q: Query) -> bool:
            return loop.predicted_ms(name, q.domain, q.text, q.max_tokens) <= max_s * 1000

        for name in self.pending():
            if self._res.slots[name].state is not ModelState.READY or name not in measured \
                    or self._clock() < self._exhausted.get(name, -math.inf):
                continue
            try:
                ev = await self._cal.run_item(name, cfg.quick_per_domain, max_s=max_s,
                                              fits=fits)
            except ModelUnavailable:
                continue  # unloaded while the item waited: another model, or later
            except Exception as e:
                self.failed.add(name)
                log.error("calibration of %s under load failed: %s: %s", name,
                          type(e).__name__, e)
                return None
            if ev is None:  # nothing that fits now; predictions change: look again later
                self._exhausted[name] = self._clock() + RECHECK_S
                continue
            self._after_item(ev, cfg)
            if ev.phase == "canary":
                loop.apply_calibration(await self._cal.results())
            return f"{ev.model}: {ev.detail}"
        return None

    def _after_item(self, ev: CalibrationEvent, cfg: CalibrationConfig) -> None:
        self.under_load_items += 1
        share = cfg.under_load_share
        self._next_under_load_s = self._clock() + ev.took_s * (1 - share) / share
        log.info("under load: %s %s (%.2f s)", ev.model, ev.detail, ev.took_s)
