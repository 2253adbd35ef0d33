"""Fixed threads for native inference work.

llama.cpp built with OpenMP keeps a spinning worker team per calling thread. When loads
and generations hop between pool threads, several teams spin against each other: on a
2-core box decode fell from ~80 to ~30 tokens/s (scripts/bench_throughput.py). So every
load and generation runs on one of `n` dedicated single-thread executors ("lanes"), held
for the whole call; `n` is the profile's `max_parallel`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor


class InferenceLanes:
    """Owned by the event loop; `lane()` waits for a free lane and yields its executor."""

    def __init__(self, n: int) -> None:
        self._executors = [ThreadPoolExecutor(1, thread_name_prefix=f"calm-infer-{i}")
                           for i in range(n)]
        self._free: asyncio.Queue[Executor] = asyncio.Queue()
        for ex in self._executors:
            self._free.put_nowait(ex)

    @property
    def size(self) -> int:
        return len(self._executors)

    @contextlib.asynccontextmanager
    async def lane(self) -> AsyncIterator[Executor]:
        ex = await self._free.get()
        try:
            yield ex
        finally:
            self._free.put_nowait(ex)

    def shutdown(self) -> None:
        for ex in self._executors:
            ex.shutdown(wait=True, cancel_futures=True)
