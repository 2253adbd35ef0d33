"""Execute: run one generation on a lease the scheduler granted, and stream it back.

The backend generates on the lease's lane thread; its deltas are relayed to the event loop
and yielded as `Delta`s, then one `Final(Generation)`. Which model runs, when, and what
happens when it fails is decided elsewhere (the orchestrator's attempts, the scheduler's
leases): this stage only carries out one generation, with its side effects.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import threading
import time
from collections.abc import AsyncGenerator
from concurrent.futures import Executor as ThreadPool
from dataclasses import dataclass

from calm_edge.backends.base import Backend, ChatMessage, GenerationRequest, GenerationStats
from calm_edge.events import Delta, Final
from calm_edge.fleet import ModelSpec
from calm_edge.residency import Residency
from calm_edge.scheduler import Lease


@dataclass(frozen=True)
class Attempt:
    """A model that was tried for a request and could not answer."""

    model: str
    error: str


@dataclass(frozen=True)
class Generation:
    """How one generation went: the `Final` of `Executor.stream`."""

    model: str
    stats: GenerationStats
    gen_start_s: float   # time.monotonic() when generation started on its lane
    gen_end_s: float     # ... and when it finished
    cold: bool           # the model's first generation since it was loaded
    text: str            # the whole answer (the deltas joined)


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
    """Asks a generation (or a wait for one) to stop. `set` from the event loop; read by
    the worker thread (threading.Event) and awaited on the loop (`gone`)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.gone = asyncio.Event()     # the same signal, for waiting on the loop
        self.reason: str | None = None  # "disconnected", "deadline", "stalled", ...

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()
            self.gone.set()

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
    def __init__(self, residency: Residency, flush_interval_s: float = 0.02) -> None:
        self._residency = residency
        self._flush_interval_s = flush_interval_s

    async def stream(self, lease: Lease, request: GenerationRequest,
                     abort: Abort | None = None,
                     ) -> AsyncGenerator[Delta | Final[Generation], None]:
        """Generate with the leased model: deltas, then one Final(Generation). Closing the
        iterator stops the generation and returns only once the worker thread has left the
        model, so the lease can be released right after. Raises ContextOverflowError (the
        prompt does not fit) or the backend's error."""
        slot = lease.slot
        backend = slot.backend
        if backend is None:  # the scheduler grants only loaded models
            raise RuntimeError(f"{lease.model}: leased but not loaded")
        cold = slot.generations == 0
        slot.generations += 1
        lease.gen_start_s = time.monotonic()
        parts: list[str] = []
        # aclosing: leaving early (client gone, cancellation) must stop the worker thread
        # before this returns, and so before the lease (the model) is released.
        try:
            async with contextlib.aclosing(self._relay(
                    backend, prepare_request(slot.spec, request), lease.lane, abort,
                    lease)) as relay:
                async for item in relay:
                    if isinstance(item, Delta):
                        parts.append(item.text)
                        yield item
                        continue
                    lease.gen_end_s = time.monotonic()
                    if cold:
                        self._residency.measure_after_generation(slot)
                    slot.failures = 0
                    yield Final(Generation(lease.model, item.value, lease.gen_start_s,
                                           lease.gen_end_s, cold, "".join(parts)))
                    return
        finally:
            if lease.gen_end_s is None:
                lease.gen_end_s = time.monotonic()
        raise RuntimeError(f"{lease.model}: generation ended without its statistics")

    async def _relay(self, backend: Backend, request: GenerationRequest, lane: ThreadPool,
                     abort: Abort | None = None, lease: Lease | None = None,
                     ) -> AsyncGenerator[Delta | Final[GenerationStats], None]:
        """Run backend.generate on the lane's thread and relay its items to the loop.

        The first delta and the end are signalled at once; later deltas wake the loop at
        most every `flush_interval_s` (tokens arriving in between go out together), which
        keeps the loop thread, and its GIL demands, off the decode path. Deltas that pile
        up are coalesced into one item.
        """
        loop = asyncio.get_running_loop()
        pending: collections.deque[Delta | Final[GenerationStats] | _Done | _Failed] = \
            collections.deque()  # appended by the worker thread, popped by the loop
        ready = asyncio.Event()
        cancel = threading.Event()
        interval_s = self._flush_interval_s
        last_wake = [-1e9]  # worker-thread state

        def push(item: Delta | Final[GenerationStats] | _Done | _Failed) -> None:
            pending.append(item)
            if lease is not None and isinstance(item, Delta):
                lease.tokens_out += 1  # read by status on the loop: a count, never torn
            now = time.monotonic()
            if not isinstance(item, Delta) or now - last_wake[0] >= interval_s:
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
                if isinstance(item, Delta):
                    texts = [item.text]  # joined once: linear however many piled up
                    while pending and isinstance(pending[0], Delta):
                        texts.append(pending.popleft().text)  # type: ignore[union-attr]
                    yield Delta("".join(texts))
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
