"""The response cache (pure) and through the daemon: a hit never touches the backend."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from calm_edge.backends.base import (
    ChatMessage,
    GenerationRequest,
    GenerationStats,
    SamplingParams,
)
from calm_edge.cache import CachedAnswer, ResponseCache
from calm_edge.config import Settings
from calm_edge.testing.fakes import FakeFactory
from tests.conftest import run_daemon, uds_client

STATS = GenerationStats(10, 5, "stop", 0.01, 0.05)


def chat(text: str, **params: object) -> GenerationRequest:
    p: dict[str, object] = {"temperature": 0.0}
    p.update(params)
    return GenerationRequest(SamplingParams(**p),  # type: ignore[arg-type]
                             messages=(ChatMessage("user", text),))


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def answer(text: str, t: float = 100.0) -> CachedAnswer:
    return CachedAnswer(text, "m", "factual", STATS, t)


def test_cache_exact_normalized_and_parameter_sensitive() -> None:
    c = ResponseCache(near_duplicate=False, clock=Clock())
    c.put("chat", "auto", "balanced", chat("What is the capital of France?"), answer("Paris"))
    hit = c.get("chat", "auto", "balanced", chat("  what is the CAPITAL of   France? "))
    assert hit is not None and hit[0].text == "Paris" and hit[1] == "exact"
    assert c.get("chat", "auto", "quality", chat("What is the capital of France?")) is None
    assert c.get("chat", "other", "balanced", chat("What is the capital of France?")) is None
    assert c.get("chat", "auto", "balanced",
                 chat("What is the capital of France?", max_tokens=9)) is None
    assert c.get("completion", "auto", "balanced", chat("What is the capital of France?")) \
        is None
    assert (c.hits_exact, c.misses) == (1, 4)


def test_cache_sampled_requests_only_when_seeded_or_allowed() -> None:
    c = ResponseCache(clock=Clock())
    c.put("chat", "auto", "b", chat("hi", temperature=0.7), answer("x"))
    assert c.get("chat", "auto", "b", chat("hi", temperature=0.7)) is None
    c.put("chat", "auto", "b", chat("hi", temperature=0.7, seed=3), answer("y"))
    assert c.get("chat", "auto", "b", chat("hi", temperature=0.7, seed=3)) is not None
    c2 = ResponseCache(sampled=True, clock=Clock())
    c2.put("chat", "auto", "b", chat("hi", temperature=0.7), answer("z"))
    assert c2.get("chat", "auto", "b", chat("hi", temperature=0.7)) is not None


def test_cache_near_duplicates_but_never_other_numbers() -> None:
    c = ResponseCache(near_duplicate=True, near_threshold=0.8, clock=Clock())
    c.put("chat", "auto", "b", chat("What is the capital city of France?"), answer("Paris"))
    hit = c.get("chat", "auto", "b", chat("What's the capital city of France?"))
    assert hit is not None and hit[1] == "near"
    assert c.get("chat", "auto", "b", chat("Who wrote Hamlet?")) is None
    c.put("chat", "auto", "b", chat("What is 12 times 7?"), answer("84"))
    assert c.get("chat", "auto", "b", chat("What is 12 times 8?")) is None
    # Multi-turn conversations are only ever matched exactly.
    multi = GenerationRequest(SamplingParams(temperature=0.0), messages=(
        ChatMessage("user", "hi"), ChatMessage("assistant", "hello"),
        ChatMessage("user", "What's the capital city of France?")))
    assert c.get("chat", "auto", "b", multi) is None


def test_cache_ttl_bounds_and_fleet_change() -> None:
    clock = Clock()
    c = ResponseCache(ttl_s=10, max_entries=3, near_duplicate=False, clock=clock)
    for i in range(5):
        c.put("chat", "auto", "b", chat(f"q{i}"), answer(f"a{i}", clock.t))
    assert c.status()["entries"] == 3
    assert c.get("chat", "auto", "b", chat("q0")) is None  # least recently used went first
    assert c.get("chat", "auto", "b", chat("q4")) is not None
    clock.t += 11
    assert c.get("chat", "auto", "b", chat("q4")) is None  # expired
    c.put("chat", "auto", "b", chat("q5"), answer("a5", clock.t))
    c.set_fingerprint("fleet-1")
    assert c.get("chat", "auto", "b", chat("q5")) is None  # a new fleet: all gone
    small = ResponseCache(max_bytes=2000, near_duplicate=False, clock=clock)
    for i in range(20):
        small.put("chat", "auto", "b", chat(f"q{i}"), answer("x" * 300, clock.t))
    assert small.bytes <= 2000


def test_cache_hit_through_the_daemon_skips_the_backend(make_settings: Callable[..., Settings],
                                                        tmp_path: Path) -> None:
    s = make_settings()
    factory = FakeFactory(answer_tokens=6)
    body = {"messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 8, "temperature": 0}
    with run_daemon(s, factory, rng=random.Random(0)), uds_client(s) as c:
        first = c.post("/v1/chat/completions", json=body).json()
        calls = sum(len(b.calls) for b in factory.backends)
        second = c.post("/v1/chat/completions", json=body).json()
        assert sum(len(b.calls) for b in factory.backends) == calls  # backend untouched
        assert second["choices"][0]["message"]["content"] == \
            first["choices"][0]["message"]["content"]
        assert first["calm"]["cache"] == "miss" and second["calm"]["cache"] == "hit"
        assert second["calm"]["model"] == first["calm"]["model"]
        bypass = c.post("/v1/chat/completions", json={**body, "calm": {"cache": False}}).json()
        assert bypass["calm"]["cache"] == "bypass"
        assert sum(len(b.calls) for b in factory.backends) == calls + 1
        with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            streamed = "".join(line for line in r.iter_lines())
        assert '"cache":"hit"' in streamed
        st = c.get("/calm/status").json()
        assert st["cache"]["hits_exact"] == 2
        assert 'calm_edge_cache_hits_total{kind="exact"} 2' in c.get("/metrics").text
