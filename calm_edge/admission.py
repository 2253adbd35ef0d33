"""Admission control: a bounded, prioritized queue in front of generation.

At most `active_limit` requests generate at once (the profile's `max_parallel`); up to
`capacity` more wait, highest `priority` first, first come first served within a priority.
A request that finds the queue full is refused at once (`Overloaded`, HTTP 429 with a
Retry-After estimated from recent service times). Owned by the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field


class Overloaded(RuntimeError):
    def __init__(self, waiting: int, retry_after_s: float) -> None:
        self.waiting, self.retry_after_s = waiting, retry_after_s
        super().__init__(f"the request queue is full ({waiting} waiting); retry in "
                         f"{retry_after_s:.0f}s")


@dataclass(order=True)
class _Waiter:
    sort_key: tuple[int, int]
    future: asyncio.Future[None] = field(compare=False)


class Admission:
    def __init__(self, active_limit: int, capacity: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.active_limit, self.capacity = active_limit, capacity
        self.active = 0
        self._heap: list[_Waiter] = []
        self._seq = itertools.count()
        self._clock = clock
        self._service_s = 5.0  # EWMA of how long an admitted request holds its place
        self.rejected = 0

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._heap if not w.future.done())

    def retry_after_s(self) -> float:
        """How long until a place is likely free: the queue drained at the recent rate."""
        return max(1.0, (self.waiting + 1) * self._service_s / max(self.active_limit, 1))

    @contextlib.asynccontextmanager
    async def admit(self, priority: int = 0) -> AsyncIterator[None]:
        """Hold one of the active places for the block. Raises Overloaded when full;
        cancellation while waiting gives the place up."""
        if self.active < self.active_limit and not self.waiting:
            self.active += 1
        else:
            if self.waiting >= self.capacity:
                self.rejected += 1
                raise Overloaded(self.waiting, self.retry_after_s())
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._heap, _Waiter((-priority, next(self._seq)), fut))
            try:
                await fut  # resolved by _release with our place already counted
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._release()  # we were handed a place but will not use it
                else:
                    fut.cancel()
                raise
        t0 = self._clock()
        try:
            yield
        finally:
            self._service_s = 0.8 * self._service_s + 0.2 * (self._clock() - t0)
            self._release()

    def _release(self) -> None:
        self.active -= 1
        while self._heap:
            w = heapq.heappop(self._heap)
            if not w.future.done():
                self.active += 1
                w.future.set_result(None)
                return
