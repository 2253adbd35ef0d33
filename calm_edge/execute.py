"""Execute: carry out a plan. Loads (through Residency), generates in a worker thread,
streams text back to the event loop, and falls back to the plan's next model when the
chosen one fails before producing any output. The stage with side effects.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncGenerator
from concurrent.futures import Executor as ThreadPool
from dataclasses import dataclass

from calm_edge.backends.base import (
    Backend,
    ChatMessage,
    ContextOverflowError,
    GenerationRequest,
    GenerationStats,
)
from calm_edge.fleet import ModelSpec
from calm_edge.lanes import InferenceLanes
from calm_edge.plan import Plan
from calm_edge.residency import ModelUnavailable, Residency

log = logging.getLogger("calm_edge.execute")


@dataclass(frozen=True)
class Attempt:
    model: str
    error: str


@dataclass(frozen=True)
class Outcome:
    """The last item of `Executor.run`: who answered and how it went."""

    model: str
    stats: GenerationStats
    failed_attempts: tuple[Attempt, ...]
    wait_s: float        # from the start of run() to the start of generation (load + queue)
    gen_start_s: float   # time.monotonic() when generation started on its lane
    gen_end_s: float     # ... and when it finished
    cold: bool = False   # the model's first generation since it was loaded
    text: str = ""       # the whole answer (the deltas joined)


class AllCandidatesFailed(RuntimeError):
    def __init__(self, attempts: list[Attempt]) -> None:
        self.attempts = attempts
        detail = "; ".join(f"{a.model}: {a.error}" for a in attempts)
        super().__init__(f"no model could answer ({detail})")


class _Done:
    pass


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_DONE = _Done()


class Abort:
    """Asks a generation to stop at its next token. `set` from the event loop; read by the
    worker thread (threading.Event)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None  # "disconnected", "deadline", ...

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


def prepare_request(spec: ModelSpec, request: GenerationRequest) -> GenerationRequest:
    """Apply per-model defaults: the manifest's system prompt when the chat has none."""
    if (request.messages is not None and spec.system_prompt
            and not any(m.role == "system" for m in request.messages)):
        msgs = (ChatMessage("system", spec.system_prompt), *request.messages)
        return dataclasses.replace(request, messages=msgs)
    return request


class Executor:
    def __init__(self, residency: Residency, lanes: InferenceLanes,
                 flush_interval_s: float = 0.02) -> None:
        self._residency, self._lanes = residency, lanes
        self._flush_interval_s = flush_interval_s
        # Generation windows (monotonic s), for sharing energy between overlapping ones:
        # running ones by a private key, and recently finished ones.
        self._running: dict[int, float] = {}
        self._finished: collections.deque[tuple[float, float]] = collections.deque(maxlen=256)
        self._next_key = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def overlapping(self, t0_s: float, t1_s: float) -> list[tuple[float, float]]:
        """Other generation windows overlapping [t0_s, t1_s]; running ones end at t1_s."""
        out = [(a, b) for a, b in self._finished if a < t1_s and b > t0_s
               and (a, b) != (t0_s, t1_s)]
        out += [(a, t1_s) for a in self._running.values() if a < t1_s and a != t0_s]
        return out

    async def run(self, plan: Plan, request: GenerationRequest, abort: Abort | None = None,
                  ) -> AsyncGenerator[str | Outcome, None]:
        """Yield text deltas, then one Outcome. Closing the iterator cancels generation.

        Raises ContextOverflowError (the request is too long for the model),
        AllCandidatesFailed, or a backend error raised after output began.
        """
        t0 = time.monotonic()
        attempts: list[Attempt] = []
        for name in (plan.model, *plan.fallbacks):
            produced = False
            outcome: Outcome | None = None
            try:
                async with self._residency.use(name) as slot, slot.gen_lock, \
                        self._lanes.lane() as lane:
                    assert slot.backend is not None
                    gen_start = time.monotonic()
                    cold = slot.generations == 0
                    slot.generations += 1
                    req = prepare_request(slot.spec, request)
                    key = self._next_key = self._next_key + 1
                    self._running[key] = gen_start
                    parts: list[str] = []
                    # aclosing: leaving this block early (client gone, cancellation) must
                    # stop the worker thread before the model's lock and lease are released;
                    # a suspended generator would otherwise keep decoding on the backend
                    # while the next request starts on it.
                    try:
                        async with contextlib.aclosing(
                                self._stream(slot.backend, req, lane, abort)) as stream:
                            async for item in stream:
                                if isinstance(item, GenerationStats):
                                    gen_end = time.monotonic()
                                    self._finished.append((gen_start, gen_end))
                                    if cold:
                                        self._residency.measure_after_generation(slot)
                                    slot.failures = 0
                                    outcome = Outcome(name, item, tuple(attempts), gen_start - t0,
                                                      gen_start, gen_end, cold, "".join(parts))
                                    break
                                produced = True
                                parts.append(item)
                                yield item
                    finally:
                        self._running.pop(key, None)
            except ContextOverflowError:
                raise
            except ModelUnavailable as e:
                attempts.append(Attempt(name, e.reason))
                continue
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
                task = asyncio.get_running_loop().create_task(
                    self._residency.mark_unhealthy(name, error))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                if produced:
                    raise
                log.exception("model %s failed before answering", name)
                attempts.append(Attempt(name, error))
                continue
            if outcome is None:  # a backend must end with its stats; this one did not
                raise RuntimeError(f"{name}: generation ended without its statistics")
            # Yielded after the model and its lane are released: recording the outcome (a
            # database commit) must not hold up the next request.
            yield outcome
            return
        raise AllCandidatesFailed(attempts)

    async def _stream(self, backend: Backend, request: GenerationRequest, lane: ThreadPool,
                      abort: Abort | None = None) -> AsyncGenerator[str | GenerationStats, None]:
        """Run backend.generate on the lane's thread and relay its items to the loop.

        The first delta and the end are signalled at once; later deltas wake the loop at
        most every `flush_interval_s` (tokens arriving in between go out together), which
        keeps the loop thread, and its GIL demands, off the decode path. Deltas that pile
        up are coalesced into one item.
        """
        loop = asyncio.get_running_loop()
        pending: collections.deque[str | GenerationStats | _Done | _Failed] = \
            collections.deque()  # appended by the worker thread, popped by the loop
        ready = asyncio.Event()
        cancel = threading.Event()
        interval_s = self._flush_interval_s
        last_wake = [-1e9]  # worker-thread state

        def push(item: str | GenerationStats | _Done | _Failed) -> None:
            pending.append(item)
            now = time.monotonic()
            if not isinstance(item, str) or now - last_wake[0] >= interval_s:
                last_wake[0] = now
                loop.call_soon_threadsafe(ready.set)

        def should_stop() -> bool:
            return cancel.is_set() or (abort is not None and abort.is_set())

        def work() -> None:
            try:
                for item in backend.generate(request, should_stop):
                    push(item)
            except BaseException as e:  # delivered to the loop, re-raised there
                push(_Failed(e))
            finally:
                push(_DONE)

        worker = loop.run_in_executor(lane, work)
        try:
            while True:
                if not pending:
                    ready.clear()
                    await ready.wait()
                    continue
                item = pending.popleft()
                if isinstance(item, str):
                    parts = [item]  # joined once: linear however many piled up
                    while pending and isinstance(pending[0], str):
                        parts.append(pending.popleft())  # type: ignore[arg-type]
                    yield "".join(parts)
                elif isinstance(item, _Done):
                    break
                elif isinstance(item, _Failed):
                    raise item.error
                else:
                    yield item
        finally:
            # The backend is not thread-safe: hold the model until the thread has left it,
            # even if this task is being cancelled (the thread stops within one token).
            cancel.set()
            await _wait_even_if_cancelled(worker)


async def _wait_even_if_cancelled(fut: asyncio.Future[None]) -> None:
    cancelled = False
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
