"""Fakes implementing calm_edge's own Protocols, for tests and loop benchmarks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calm_edge.backends.base import (
    Backend,
    ChatMessage,
    GenerationRequest,
    GenerationStats,
    SamplingParams,
    TokenConfidence,
)
from calm_edge.classifier import Classification
from calm_edge.config import RuntimeConfig
from calm_edge.domains import DOMAINS
from calm_edge.energy import PowerSample
from calm_edge.events import Delta, Final
from calm_edge.execute import Abort
from calm_edge.fleet import ModelSpec
from calm_edge.orchestrator import Answer, Orchestrator, ServeRequest


@dataclass
class FakeBackend:
    """Answers "<model>-<i> " one word per token.

    `token_delay_s` really sleeps per token; `sim_token_ms` (read from the factory at each
    call) is the decode time the stats report, so loop tests control "speed" exactly
    without sleeping.
    """

    spec: ModelSpec
    factory: FakeFactory
    closed: bool = False
    calls: list[GenerationRequest] = field(default_factory=list)
    produced: list[int] = field(default_factory=list)  # tokens yielded, per finished call
    active: int = 0      # generate() calls running now (llama.cpp allows one)
    max_active: int = 0  # the most ever running at once
    supports_confidence: bool = True

    def generate(self, request: GenerationRequest,
                 should_stop: Callable[[], bool]) -> Iterator[Delta | Final[GenerationStats]]:
        f = self.factory
        self.calls.append(request)
        n_out = min(request.params.max_tokens, f.answer_tokens)
        fail_after = f.fail_after_tokens.get(self.spec.name)
        sim_ms = f.sim_token_ms.get(self.spec.name, 1.0)
        n = 0
        finish = "stop" if n_out < request.params.max_tokens else "length"
        with f.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            for i in range(n_out):
                if fail_after is not None and i >= fail_after:
                    raise RuntimeError(f"{self.spec.name} exploded")
                if f.token_delay_s:
                    time.sleep(f.token_delay_s)
                n += 1
                yield Delta(f"{self.spec.name}-{i} ")
                if should_stop():
                    finish = "cancelled"
                    break
        finally:
            self.produced.append(n)
            with f.lock:
                self.active -= 1
        ttft_s = 20 * sim_ms / 1000.0  # prefill of a short prompt
        lp = f.logprob.get(self.spec.name, -0.1)
        conf = TokenConfidence.of([lp] * n) \
            if request.confidence and self.spec.name not in f.no_logprobs else None
        yield Final(GenerationStats(20, n, finish, ttft_s,  # type: ignore[arg-type]
                                    ttft_s + max(n - 1, 0) * sim_ms / 1000.0, conf))

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeFactory:
    """A BackendFactory that records loads and can be told to fail, block or slow down."""

    token_delay_s: float = 0.0
    load_delay_s: float = 0.0
    answer_tokens: int = 1000
    fail_loads: set[str] = field(default_factory=set)
    fail_after_tokens: dict[str, int] = field(default_factory=dict)
    sim_token_ms: dict[str, float] = field(default_factory=dict)
    logprob: dict[str, float] = field(default_factory=dict)  # every token's, per model
    no_logprobs: set[str] = field(default_factory=set)  # models whose backend gives none
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
        b = FakeBackend(spec, self)
        with self.lock:
            self.backends.append(b)
        return b


@dataclass
class FixedClassifier:
    """A QueryClassifier that says every query is `domain` (or the first word, if that
    names a domain: "math: what is 2+2")."""

    domain: str = "factual"
    difficulty: float = 0.5
    runtime: str = "fixed"

    def classify(self, text: str) -> Classification:
        head = text.split(":", 1)[0].strip()
        d = head if head in DOMAINS else self.domain
        return Classification(d, {x: float(x == d) for x in DOMAINS},  # type: ignore[arg-type]
                               self.difficulty)


@dataclass
class ConstantPowerReader:
    """A PowerReader at a fixed board power (measured=False, like the estimator)."""

    power_mw: float = 10_000.0
    source: str = "constant"
    measured: bool = False
    rails: tuple[str, ...] = ("total",)
    clock: Callable[[], float] = time.monotonic
    selection_notes: tuple[str, ...] = ()

    def read(self) -> PowerSample:
        return PowerSample(self.clock(), self.power_mw, {"total": self.power_mw})

    def close(self) -> None:
        pass


async def serve_to_end(orch: Orchestrator, req: ServeRequest,
                       abort: Abort | None = None) -> Answer:
    """Serve one request through `Orchestrator.serve` and return its Answer (the text is
    dropped): the loop end to end, without HTTP."""
    async for event in orch.serve(req, abort or Abort()):
        if isinstance(event, Final):
            return event.value
    raise AssertionError(f"{req.rid}: serve ended without a Final")


def chat_request(rid: str, text: str, *, model: str = "auto", max_tokens: int = 32,
                 **kw: Any) -> ServeRequest:
    """A one-message chat request for `serve_to_end`."""
    return ServeRequest(rid=rid, kind="chat", model=model, request=GenerationRequest(
        SamplingParams(max_tokens=max_tokens), messages=(ChatMessage("user", text),)), **kw)
