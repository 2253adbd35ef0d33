"""Integration: the daemon serving real models of the default fleet.

Needs the model files (`calm-edge models pull`). A test whose model is missing is skipped,
unless CALM_TEST_REQUIRE_MODELS names it (comma-separated, or "all"): CI sets
CALM_TEST_REQUIRE_MODELS=smollm2-135m, so there a missing SmolLM2 is a failure.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from calm_edge.config import Settings, load_settings
from calm_edge.fleet import FileStatus, load_fleet, verify
from calm_edge.memory import process_rss_bytes
from calm_edge.paths import bundled_dir
from tests.conftest import run_daemon, uds_client

pytestmark = pytest.mark.integration


def _require(names: list[str]) -> Callable[[Path], Settings]:
    def make(socket_dir: Path) -> Settings:
        s = load_settings("x86-dev", cli={"server": {"socket": str(socket_dir / "c.sock")},
                                          "paths": {"state_dir": str(socket_dir / "state")},
                                          "loop": {"explore_epsilon": "0"}})
        fleet = load_fleet(bundled_dir("models") / "fleet.toml")
        missing = [n for n in names
                   if verify(s.models_dir, fleet.by_name[n]) is not FileStatus.VERIFIED]
        if missing:
            msg = f"models not installed in {s.models_dir}: {', '.join(missing)} " \
                  f"(calm-edge models pull {' '.join(missing)})"
            required = os.environ.get("CALM_TEST_REQUIRE_MODELS", "").split(",")
            if "all" in required or any(n in required for n in missing):
                pytest.fail(msg)
            pytest.skip(msg)
        return s
    return make


def test_integration_smollm2_knows_the_capital_of_france(short_tmp: Path) -> None:
    s = _require(["smollm2-135m"])(short_tmp)
    with run_daemon(s), uds_client(s, timeout_s=120) as c:
        r = c.post("/v1/chat/completions", json={
            "model": "smollm2-135m", "temperature": 0, "max_tokens": 32,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert "Paris" in body["choices"][0]["message"]["content"]
        assert body["calm"]["model"] == "smollm2-135m"
        assert body["calm"]["decode_tokens_per_s"] > 0


@pytest.mark.parametrize(("model", "kind", "expected"), [
    ("smollm2-135m", "chat", "Paris"),
    ("gemma3-270m", "chat", "Paris"),        # base model: rendered as a completion prompt
    ("qwen2.5-coder-0.5b", "chat", "Paris"),
    ("qwen2.5-coder-1.5b", "chat", "Paris"),
    ("gemma3-270m", "completion", "Paris"),
])
def test_integration_each_model_answers(short_tmp: Path, model: str, kind: str,
                                        expected: str) -> None:
    s = _require([model])(short_tmp)
    with run_daemon(s), uds_client(s, timeout_s=300) as c:
        if kind == "chat":
            r = c.post("/v1/chat/completions", json={
                "model": model, "temperature": 0, "max_tokens": 24,
                "messages": [{"role": "user", "content": "What is the capital of France?"}]})
            text = r.json()["choices"][0]["message"]["content"]
        else:
            r = c.post("/v1/completions", json={
                "model": model, "temperature": 0, "max_tokens": 24,
                "prompt": "Question: What is the capital of France?\nAnswer:",
                "stop": ["\n"]})
            text = r.json()["choices"][0]["text"]
        assert r.status_code == 200, r.text
        assert expected in text


ALL_MODELS = ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]


def test_integration_routing_on_the_real_fleet(short_tmp: Path) -> None:
    """balanced: code -> the code model, a short factual question -> a small model;
    quality: the largest model. The calm object explains each choice."""
    s = _require(ALL_MODELS)(short_tmp)

    def ask(c: Any, text: str, mode: str) -> dict[str, Any]:
        r = c.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": text}], "max_tokens": 16,
            "temperature": 0, "calm": {"mode": mode}})
        assert r.status_code == 200, r.text
        calm: dict[str, Any] = r.json()["calm"]
        assert calm["reason"] and calm["candidates"] and calm["mode"] == mode
        return calm

    with run_daemon(s), uds_client(s, timeout_s=300) as c:
        code = ask(c, "Write a Python function that returns the n-th Fibonacci number.",
                   "balanced")
        assert code["domain"] == "code"
        assert code["model"] == "qwen2.5-coder-0.5b", code
        fact = ask(c, "What is the capital of France?", "balanced")
        assert fact["domain"] == "factual"
        assert fact["model"] in ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"), fact
        best = ask(c, "What is the capital of France?", "quality")
        assert best["model"] == "qwen2.5-coder-1.5b", best
        assert "quality" in best["reason"]


def test_integration_budget_for_one_of_two_real_models(short_tmp: Path) -> None:
    """A budget that holds SmolLM2 or Gemma but not both: alternating requests swap them,
    every answer is right, and the process never grows past its baseline plus the budget
    (plus 64 MiB for the allocator and Python objects)."""
    s = _require(["smollm2-135m", "gemma3-270m"])(short_tmp)
    s = dataclasses.replace(s, profile=dataclasses.replace(
        s.profile, memory=dataclasses.replace(s.profile.memory, ram_budget_bytes=600 << 20),
        cache=dataclasses.replace(s.profile.cache, enabled=False),
        residency=dataclasses.replace(s.profile.residency, prefetch=False)))
    margin = 64 << 20
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process_rss_bytes())
            time.sleep(0.01)

    with run_daemon(s), uds_client(s, timeout_s=300) as c:
        baseline = process_rss_bytes()
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            for i in range(6):
                model = ("smollm2-135m", "gemma3-270m")[i % 2]
                r = c.post("/v1/chat/completions", json={
                    "model": model, "temperature": 0, "max_tokens": 16,
                    "messages": [{"role": "user", "content": "What is the capital of France?"}]})
                assert r.status_code == 200, r.text
                assert "Paris" in r.json()["choices"][0]["message"]["content"]
                st = c.get("/calm/status").json()
                assert st["memory"]["resident"] == [model]
                assert st["memory"]["used_bytes"] <= st["memory"]["budget_bytes"]
        finally:
            stop.set()
            sampler.join()
        loads = {m["name"]: m["loads"] for m in st["models"]}
        assert loads["smollm2-135m"] == 3 and loads["gemma3-270m"] == 3
    assert peak[0] - baseline <= (600 << 20) + margin, (peak[0] - baseline) >> 20
