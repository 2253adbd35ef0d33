"""Run a calibration: load times, footprint and canary answers, per model, on this device.

Runs on the event loop over the daemon's own machinery (the scheduler grants background
leases, Residency loads and evicts under the budget, Executor generates on the inference
lanes), so `calm-edge calibrate` and the daemon's idle calibration measure exactly what
serving does. Every finished item is committed to the knowledge store at once: an
interrupted run resumes at the next item.

Per model:
1. `load`: unload it, drop its file pages, load (cold), unload, load again (warm), answer a
   short warm-up: load times and the measured footprint (RSS, plus GPU memory where
   layers are offloaded). Skipped while the model is in use.
2. one item per canary: a greedy answer within the canary's max_tokens and
   `canary_timeout_s`, graded by calm_edge.bench.graders (code runs in the bench's
   sandboxed subprocess, never in this process).
3. `speed@<power state>`: a short greedy answer timed in the power state in force (Jetson
   power mode and frequency caps, `power_state`), when one is known; recorded once per
   state, also for a model calibrated before, so that the loop rescales its speeds by the
   model's own ratio when the state changes (calm_edge.analyze.speed_ratio).
4. `done`: the plan (quick or full) is complete.

`busy()` (requests running or waiting) is polled between items and while a canary runs:
when it turns true the canary in progress is cancelled (not recorded) and `run` raises
Preempted, so a request never waits behind a calibration for more than one token.

Under load (`run_item`, calm_edge.calibration.background) one canary runs at a time on a
model already loaded, behind every request and not preempted, within a time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor as ThreadPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from calm_edge.backends.base import ChatMessage, GenerationRequest, SamplingParams
from calm_edge.bench.graders import grade
from calm_edge.bench.workload import Query, load_workload, select
from calm_edge.calibration.device import DeviceIdentity
from calm_edge.calibration.results import (
    SPEED_ITEM,
    CanaryResult,
    LoadResult,
    ModelCalibration,
    ModeSpeed,
    summarize,
)
from calm_edge.events import Delta
from calm_edge.execute import Abort, Executor, Generation
from calm_edge.knowledge import KnowledgeStore
from calm_edge.residency import ModelUnavailable, Residency
from calm_edge.scheduler import Scheduler

log = logging.getLogger("calm_edge.calibration")

CANARIES_PATH = Path(__file__).resolve().parent / "data" / "canaries.jsonl"
_WARMUP = GenerationRequest(SamplingParams(max_tokens=4, temperature=0.0),
                            messages=(ChatMessage("user", "Hello"),))
# The answer timed in each power state: the same greedy tokens every time.
_SPEED = GenerationRequest(SamplingParams(max_tokens=48, temperature=0.0, seed=0),
                           messages=(ChatMessage("user", "Count from 1 to 40, separated by "
                                                 "spaces."),))
_POLL_S = 0.1

# (key, capacity, capacity kind) of the power state in force, or None where none is known.
PowerStateFn = Callable[[], tuple[str, float | None, str | None] | None]


def load_canaries(path: Path | None = None) -> list[Query]:
    """The canary set (shipped with the package; see data/DATA_CARD.md)."""
    return load_workload(path or CANARIES_PATH)


def canary_request(q: Query) -> GenerationRequest:
    """A canary as the backend sees it: greedy, within the canary's max_tokens."""
    params = SamplingParams(max_tokens=q.max_tokens, temperature=0.0, seed=0)
    if q.messages is not None:
        return GenerationRequest(params, messages=tuple(
            ChatMessage(m["role"], m["content"]) for m in q.messages))  # type: ignore[arg-type]
    return GenerationRequest(params, prompt=q.prompt)


@dataclass(frozen=True)
class CalibrationEvent:
    """Progress, for a terminal or the daemon's status."""

    model: str
    phase: Literal["start", "load", "canary", "speed", "done", "paused", "skipped"]
    done: int          # items finished for this model, this plan
    total: int         # items in this model's plan
    detail: str = ""
    took_s: float = 0.0  # an item under load: its generation time (run_item)


class Preempted(Exception):
    """A request arrived: calibration stopped before finishing its plan."""


class Calibrator:
    """Owned by the event loop; one `run` at a time."""

    def __init__(self, residency: Residency, scheduler: Scheduler, executor: Executor,
                 store: KnowledgeStore, identity: DeviceIdentity, pool: ThreadPool, *,
                 canaries: Sequence[Query] | None = None, canary_timeout_s: float = 120.0,
                 busy: Callable[[], bool] | None = None,
                 grader: Callable[[str, str, Mapping[str, Any]], tuple[bool, str]] = grade,
                 clock: Callable[[], float] = time.monotonic,
                 power_state: PowerStateFn | None = None) -> None:
        """`busy` defaults to the scheduler's (requests running or waiting). `power_state`
        names the power state in force (the orchestrator's `power_key`); without it no
        speed items are recorded."""
        self.power_state: PowerStateFn = power_state or (lambda: None)
        self._res, self._sched, self._exec, self._store = residency, scheduler, executor, store
        self.identity, self._pool = identity, pool
        self.canaries = list(canaries) if canaries is not None else load_canaries()
        self._timeout_s, self._grade, self._clock = canary_timeout_s, grader, clock
        self._busy = busy if busy is not None else scheduler.busy
        self.current: CalibrationEvent | None = None  # what runs now (status)
        # (model file sha256, canary id): ran past the limit under load; left to idle spells
        self._too_long: set[tuple[str, str]] = set()

    # -- what is known -----------------------------------------------------------------

    async def results(self) -> dict[str, ModelCalibration]:
        """Each fleet model's calibration on this device for its current file (partial
        ones included)."""
        items = await self._store.calibration_items(self.identity.key)
        out = {}
        for name, slot in self._res.slots.items():
            mine = items.get((name, slot.spec.sha256))
            if mine:
                out[name] = self._summary(name, slot.spec.sha256, mine)
        return out

    def _summary(self, name: str, sha: str, items: Mapping[str, tuple[Any, float]],
                 ) -> ModelCalibration:
        load = LoadResult.from_json(items["load"][0]) if "load" in items else None
        ids = {q.id for q in self.canaries}
        canaries = [CanaryResult.from_json(r) for key, (r, _) in items.items()
                    if key.startswith("canary:") and key[7:] in ids]
        done = items.get("done")
        speeds = {}
        for key, (r, _) in items.items():
            if key.startswith(SPEED_ITEM):
                try:
                    speeds[key[len(SPEED_ITEM):]] = ModeSpeed.from_json(r)
                except (ValueError, TypeError, AttributeError) as e:
                    log.warning("ignoring unreadable calibration item %s/%s: %s", name, key, e)
        return summarize(name, sha, self.identity.key, load, canaries,
                         complete=done is not None,
                         quick=bool(done[0].get("quick")) if done else False,
                         finished_ts=max(ts for _, ts in items.values()),
                         speeds_by_mode=speeds)

    def plan_canaries(self, per_domain: int) -> list[Query]:
        return select(self.canaries, limit=per_domain)

    def under_load_order(self, per_domain: int) -> list[Query]:
        """The plan's canaries in the order calibration under load takes them: rounds of one
        canary per domain, the shortest max_tokens first within a round, so that every
        domain has an answer early and cheap items come first."""
        rounds: dict[str, int] = {}
        keyed = []
        for i, q in enumerate(self.plan_canaries(per_domain)):
            r = rounds[q.domain] = rounds.get(q.domain, -1) + 1
            keyed.append(((r, q.max_tokens, i), q))
        return [q for _, q in sorted(keyed, key=lambda t: t[0])]

    async def run_item(self, name: str, per_domain: int, *, max_s: float,
                       fits: Callable[[str, Query], bool] | None = None,
                       ) -> CalibrationEvent | None:
        """Calibration under load: answer `name`'s next canary of the `per_domain` plan
        (`under_load_order`) not stored yet and that `fits` (e.g. is predicted to take
        at most `max_s`), on a background lease: behind every request, not preempted, on
        a resident model only (ModelUnavailable otherwise). A canary still running after
        `max_s` is stopped and dropped, and not tried under load again. Returns what was
        done; None when no canary is left to try under load."""
        sha = self._res.slots[name].spec.sha256
        items = (await self._store.calibration_items(self.identity.key)).get((name, sha), {})
        order = self.under_load_order(per_domain)
        todo = [q for q in order if f"canary:{q.id}" not in items
                and (sha, q.id) not in self._too_long and (fits is None or fits(name, q))]
        if not todo:
            return None
        q = todo[0]
        done = sum(1 for x in order if f"canary:{x.id}" in items)
        self._emit(CalibrationEvent(name, "canary", done, len(order),
                                    f"{q.id} (under load)"), None)
        try:
            result = await self._answer(name, q, under_load_s=max_s)
            if result is None:
                self._too_long.add((sha, q.id))
                return CalibrationEvent(name, "skipped", done, len(order),
                                        f"{q.id}: longer than {max_s:g} s; left for an "
                                        "idle spell", max_s)
            await self._store.record_calibration(self.identity.key, name, sha,
                                                 f"canary:{q.id}", result.to_json())
            return CalibrationEvent(name, "canary", done + 1, len(order),
                                    f"{q.id}: {'pass' if result.passed else 'fail'} "
                                    "(under load)", result.total_s)
        finally:
            self.current = None

    # -- running -----------------------------------------------------------------------

    async def run(self, models: Sequence[str], per_domain: int, *, quick: bool,
                  on_event: Callable[[CalibrationEvent], None] | None = None,
                  ) -> dict[str, ModelCalibration]:
        """Calibrate `models` in order, resuming from stored items. Raises Preempted when
        `busy()` turned true; AllCandidatesFailed when a model cannot load or answer."""
        planned = self.plan_canaries(per_domain)
        stored = await self._store.calibration_items(self.identity.key)
        out: dict[str, ModelCalibration] = {}
        try:
            for name in models:
                sha = self._res.slots[name].spec.sha256
                out[name] = await self._run_model(
                    name, dict(stored.get((name, sha), {})), planned, per_domain, quick,
                    on_event)
        finally:
            self.current = None
        return out

    async def _run_model(self, name: str, items: dict[str, tuple[Any, float]],
                         planned: list[Query], per_domain: int, quick: bool,
                         on_event: Callable[[CalibrationEvent], None] | None,
                         ) -> ModelCalibration:
        sha = self._res.slots[name].spec.sha256
        todo = [q for q in planned if f"canary:{q.id}" not in items]
        total = len(planned) + 1
        done = total - len(todo) - int("load" not in items)

        def event(phase: Any, detail: str = "") -> None:
            self._emit(CalibrationEvent(name, phase, done, total, detail), on_event)

        finished = "done" in items and (quick or not items["done"][0].get("quick"))
        if finished and not todo and "load" in items:
            event("skipped", "already calibrated on this device")
            return self._summary(name, sha, items)
        event("start")
        try:
            if "load" not in items:
                load = await self._measure_load(name)
                await self._record(name, sha, "load", load.to_json(), items)
                done += 1
                event("load", _describe_load(load))
            for q in todo:
                result = await self._answer(name, q)
                assert result is not None  # None only under load
                await self._record(name, sha, f"canary:{q.id}", result.to_json(), items)
                done += 1
                event("canary", f"{q.id}: {'pass' if result.passed else 'fail'}")
            state = self.power_state()
            if state is not None and SPEED_ITEM + state[0] not in items:
                try:
                    speed = await self._measure_speed(name, state)
                except ModelUnavailable as e:  # the rest of the calibration stands
                    log.warning("%s: no speed for power state %s: %s", name, state[0],
                                e.reason)
                else:
                    await self._record(name, sha, SPEED_ITEM + state[0], speed.to_json(),
                                       items)
                    event("speed", _describe_speed(state[0], speed))
            await self._record(name, sha, "done", {"quick": quick, "per_domain": per_domain},
                               items)
        except Preempted:
            event("paused", "a request arrived")
            raise
        event("done")
        return self._summary(name, sha, items)

    async def measure_speed(self, name: str) -> ModeSpeed | None:
        """Time `name`'s speed in the power state in force and store it (item
        `speed@<key>`), unless it is stored already or no state is known. Raises Preempted
        when a request arrives."""
        state = self.power_state()
        if state is None:
            return None
        sha = self._res.slots[name].spec.sha256
        items = dict((await self._store.calibration_items(self.identity.key))
                     .get((name, sha), {}))
        if SPEED_ITEM + state[0] in items:
            return ModeSpeed.from_json(items[SPEED_ITEM + state[0]][0])
        try:
            speed = await self._measure_speed(name, state)
            await self._record(name, sha, SPEED_ITEM + state[0], speed.to_json(), items)
            self._emit(CalibrationEvent(name, "speed", 1, 1, _describe_speed(state[0], speed)),
                       None)
        finally:
            self.current = None
        return speed

    async def _measure_speed(self, name: str, state: tuple[str, float | None, str | None],
                             ) -> ModeSpeed:
        self._check_idle()
        _, gen, reason = await self._generate(name, _SPEED, self._timeout_s)
        s = gen.stats
        if reason == "deadline" or s.completion_tokens < 2:
            raise ModelUnavailable(name, "the speed answer was too short to time")
        return ModeSpeed(s.ttft_s * 1000 / s.prompt_tokens if s.prompt_tokens else None,
                         (s.total_s - s.ttft_s) * 1000 / (s.completion_tokens - 1),
                         state[1], state[2])

    def _emit(self, ev: CalibrationEvent,
              on_event: Callable[[CalibrationEvent], None] | None) -> None:
        self.current = ev
        if on_event is not None:
            on_event(ev)

    async def _record(self, name: str, sha: str, item: str, result: dict[str, Any],
                      items: dict[str, tuple[Any, float]]) -> None:
        await self._store.record_calibration(self.identity.key, name, sha, item, result)
        items[item] = (result, time.time())

    def _check_idle(self) -> None:
        if self._busy():
            raise Preempted()

    async def _measure_load(self, name: str) -> LoadResult:
        """Cold load (file pages dropped), then warm load, then a warm-up answer, under one
        background lease on the model (nobody else uses it meanwhile)."""
        res = self._res
        self._check_idle()
        lease = await self._sched.acquire(name, load=False, background=True)
        try:
            slot = lease.slot
            await res.unload(name)
            await res.drop_file_pages(name)
            self._check_idle()
            await res.ensure_ready(name, lease.lane)
            cold = slot.last_load_s
            self._check_idle()
            await res.unload(name)
            self._check_idle()
            await res.ensure_ready(name, lease.lane)
            warm = slot.last_load_s
        finally:
            self._sched.release(lease)
        await self._generate(name, _WARMUP, self._timeout_s)  # faults the weights in
        return LoadResult(cold, warm, slot.measured_bytes, slot.memory_source)

    async def _answer(self, name: str, q: Query, *, under_load_s: float | None = None,
                      ) -> CanaryResult | None:
        """Answer and grade one canary. Under load (`under_load_s`): not preempted, on a
        resident model only (ModelUnavailable otherwise), and None (nothing to record)
        when it runs past `under_load_s`."""
        if under_load_s is None:
            self._check_idle()
        timeout_s = self._timeout_s if under_load_s is None else under_load_s
        text, gen, reason = await self._generate(name, canary_request(q), timeout_s,
                                                 under_load=under_load_s is not None)
        s = gen.stats
        if reason == "deadline" and under_load_s is not None:
            return None
        if reason == "deadline":
            passed, detail, finish = False, f"no answer within {self._timeout_s:g} s", \
                "deadline"
        else:
            passed, detail = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._grade, q.grader, text, q.grader_args)
            finish = s.finish_reason
        return CanaryResult(q.id, q.domain, passed, detail, s.prompt_tokens,
                            s.completion_tokens, q.max_tokens, finish, s.ttft_s, s.total_s)

    async def _generate(self, name: str, request: GenerationRequest, timeout_s: float, *,
                        under_load: bool = False) -> tuple[str, Generation, str | None]:
        """Generate with `name` on a background lease; stop at `timeout_s` ("deadline") or
        when busy() turns true (raises Preempted). `under_load`: never preempted, and only
        on a resident model (ModelUnavailable otherwise: nothing is loaded for it)."""
        abort = Abort()
        lease = await self._sched.acquire(name, background=True, resident_only=under_load)
        watcher = asyncio.get_running_loop().create_task(
            self._watch(abort, timeout_s, preempt=not under_load))
        parts: list[str] = []
        gen: Generation | None = None
        error: str | None = None
        try:
            async with contextlib.aclosing(self._exec.stream(lease, request, abort)) as stream:
                async for item in stream:
                    if isinstance(item, Delta):
                        parts.append(item.text)
                    else:
                        gen = item.value
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            watcher.cancel()
            self._sched.release(lease, error=error)
        if abort.reason == "preempted":
            raise Preempted()
        if gen is None:  # pragma: no cover - the executor ends with a Final or raises
            raise ModelUnavailable(name, "generation ended without a result")
        return "".join(parts), gen, abort.reason

    async def _watch(self, abort: Abort, timeout_s: float, *, preempt: bool = True) -> None:
        deadline = self._clock() + timeout_s
        while not abort.is_set():
            if preempt and self._busy():
                abort.set("preempted")
            elif self._clock() >= deadline:
                abort.set("deadline")
            else:
                await asyncio.sleep(_POLL_S)


def _describe_speed(key: str, speed: ModeSpeed) -> str:
    return f"{speed.decode_ms_per_token:.1f} ms/token in power state {key}"


def _describe_load(load: LoadResult) -> str:
    def s(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f} s"

    mib = f"{load.measured_bytes / (1 << 20):.0f} MiB" if load.measured_bytes else "-"
    return f"cold load {s(load.cold_load_s)}, warm load {s(load.warm_load_s)}, " \
           f"{mib} ({load.memory_source})"

