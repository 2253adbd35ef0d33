"""Fakes implementing calm_edge's own Protocols (never mocks of our code)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from calm_edge.backends.base import Backend, GenerationRequest, GenerationStats
from calm_edge.config import RuntimeConfig
from calm_edge.fleet import ModelSpec


@dataclass
class FakeBackend:
    """Answers "<model>: <n> tokens" one word per token, `token_delay_s` apart."""

    spec: ModelSpec
    token_delay_s: float = 0.0
    fail_after_tokens: int | None = None
    closed: bool = False
    calls: list[GenerationRequest] = field(default_factory=list)

    def generate(self, request: GenerationRequest,
                 should_stop: Callable[[], bool]) -> Iterator[str | GenerationStats]:
        self.calls.append(request)
        t0 = time.monotonic()
        n = 0
        finish = "length"
        for i in range(request.params.max_tokens):
            if self.fail_after_tokens is not None and i >= self.fail_after_tokens:
                raise RuntimeError(f"{self.spec.name} exploded")
            if self.token_delay_s:
                time.sleep(self.token_delay_s)
            n += 1
            yield f"{self.spec.name}-{i} "
            if should_stop():
                finish = "cancelled"
                break
        yield GenerationStats(3, n, finish, 0.0, time.monotonic() - t0)  # type: ignore[arg-type]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeFactory:
    """A BackendFactory that records loads and can be told to fail or block."""

    token_delay_s: float = 0.0
    load_delay_s: float = 0.0
    fail_loads: set[str] = field(default_factory=set)
    fail_after_tokens: dict[str, int] = field(default_factory=dict)
    loads: list[str] = field(default_factory=list)
    backends: list[FakeBackend] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, spec: ModelSpec, path: Path, runtime: RuntimeConfig) -> Backend:
        with self.lock:
            self.loads.append(spec.name)
        if self.load_delay_s:
            time.sleep(self.load_delay_s)
        if spec.name in self.fail_loads:
            raise RuntimeError(f"cannot load {spec.name}")
        b = FakeBackend(spec, self.token_delay_s, self.fail_after_tokens.get(spec.name))
        with self.lock:
            self.backends.append(b)
        return b
