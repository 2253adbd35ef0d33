"""Integration: the daemon serving real models of the default fleet.

Needs the model files (`calm-edge models pull`). A test whose model is missing is skipped,
unless CALM_TEST_REQUIRE_MODELS names it (comma-separated, or "all"): CI sets
CALM_TEST_REQUIRE_MODELS=smollm2-135m, so there a missing SmolLM2 is a failure.

These tests assert what holds on every CPU: answers arrive, stop strings and token limits
are honoured, memory stays within the budget. They never assert a model's wording: greedy
output of a small quantized model follows the kernels the backend picked for the CPU
(AVX2, AVX-512, NEON), and SmolLM2-135M names the capital of France on one x86 machine
but not on another. Whether a model answers well on this device is what
`calm-edge calibrate` measures (tests/test_calibration.py).
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
from tests.conftest import bundled_profile, fleet_models_dir, run_daemon, uds_client

pytestmark = pytest.mark.integration


def _require(names: list[str]) -> Callable[[Path], Settings]:
    def make(socket_dir: Path) -> Settings:
        s = load_settings(bundled_profile("x86-dev"), cli={
            "server": {"socket": str(socket_dir / "c.sock")},
            "paths": {"state_dir": str(socket_dir / "state"),
                      "models_dir": str(fleet_models_dir()),
                      # the default fleet only: none of the models a user added here
                      "local_fleet": str(socket_dir / "fleet.local.toml")},
            "loop": {"explore_epsilon": "0"}, "calibration": {"auto": "false"}})
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


def test_integration_smollm2_answers_a_chat_question(short_tmp: Path) -> None:
    s = _require(["smollm2-135m"])(short_tmp)
    with run_daemon(s), uds_client(s, timeout_s=120) as c:
        r = c.post("/v1/chat/completions", json={
            "model": "smollm2-135m", "temperature": 0, "max_tokens": 32,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        text = body["choices"][0]["message"]["content"]
        calm, use = body["calm"], body["usage"]
        assert text.strip() and calm["model"] == "smollm2-135m"
        assert 1 <= use["completion_tokens"] <= 32 and use["prompt_tokens"] > 5
        assert calm["completion_tokens"] == use["completion_tokens"]
        assert body["choices"][0]["finish_reason"] == (
            "length" if use["completion_tokens"] == 32 else "stop")
        assert calm["decode_tokens_per_s"] > 0 and calm["energy"] == "estimated"


@pytest.mark.parametrize(("model", "kind"), [
    ("smollm2-135m", "chat"),
    ("gemma3-270m", "chat"),        # base model: rendered as a completion prompt
    ("qwen2.5-coder-0.5b", "chat"),
    ("qwen2.5-coder-1.5b", "chat"),
    ("gemma3-270m", "completion"),
])
def test_integration_each_model_answers(short_tmp: Path, model: str, kind: str) -> None:
    """Every model answers within its limits; the base model's stop strings (its
    completion template's and the request's) end its answer."""
    s = _require([model])(short_tmp)
    spec = load_fleet(s.fleet_path).by_name[model]
    with run_daemon(s), uds_client(s, timeout_s=300) as c:
        if kind == "chat":
            r = c.post("/v1/chat/completions", json={
                "model": model, "temperature": 0, "max_tokens": 24,
                "messages": [{"role": "user", "content": "What is the capital of France?"}]})
            text = r.json()["choices"][0]["message"]["content"]
            stops = list(spec.stop)
        else:
            r = c.post("/v1/completions", json={
                "model": model, "temperature": 0, "max_tokens": 24,
                "prompt": "Question: What is the capital of France?\nAnswer:",
                "stop": ["\n"]})
            text = r.json()["choices"][0]["text"]
            stops = ["\n"]
        assert r.status_code == 200, r.text
        assert text.strip(), r.json()
        assert r.json()["usage"]["completion_tokens"] <= 24
        for stop in stops:
            assert stop not in text, (stop, text)


ALL_MODELS = ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]


def test_integration_routing_on_the_real_fleet(short_tmp: Path) -> None:
    """balanced: code -> the code model, a short factual question -> a small model;
    quality: the largest model, or a cascade that escalates to it. The calm object explains
    each choice."""
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
        # The largest model, or a cascade that escalates to it when unsure (shipped where
        # its graded answers beat the largest alone: models/router/cascade.json).
        assert best["model"] == "qwen2.5-coder-1.5b" or (
            best["cascade"] and "-> qwen2.5-coder-1.5b" in best["reason"]), best
        assert "quality" in best["reason"]


def test_integration_budget_for_one_of_two_real_models(short_tmp: Path) -> None:
    """A budget that holds SmolLM2 or Gemma but not both: alternating requests swap them,
    every request is answered, and the process never grows past its baseline plus the
    budget (plus 64 MiB for the allocator and Python objects)."""
    s = _require(["smollm2-135m", "gemma3-270m"])(short_tmp)
    s = dataclasses.replace(s, profile=dataclasses.replace(
        s.profile, memory=dataclasses.replace(s.profile.memory, ram_budget_bytes=420 << 20),
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
                assert r.json()["choices"][0]["message"]["content"].strip()
                st = c.get("/calm/status").json()
                assert st["memory"]["resident"] == [model]
                assert st["memory"]["used_bytes"] <= st["memory"]["budget_bytes"]
        finally:
            stop.set()
            sampler.join()
        loads = {m["name"]: m["loads"] for m in st["models"]}
        assert loads["smollm2-135m"] == 3 and loads["gemma3-270m"] == 3
    assert peak[0] - baseline <= (420 << 20) + margin, (peak[0] - baseline) >> 20


@pytest.mark.parametrize("mmap", [True, False])
def test_integration_smollm2_footprint_estimate_bounds_measured_rss(short_tmp: Path,
                                                                    mmap: bool) -> None:
    """The estimate charged before SmolLM2's load is measured covers the RSS its load and a
    first answer take (in a fresh process), in both mmap modes, within a sane margin."""
    from calm_edge.fleet import model_footprint
    from calm_edge.gguf_meta import read_gguf
    from tests.conftest import measured_growth_bytes

    s = _require(["smollm2-135m"])(short_tmp)
    spec = load_fleet(s.fleet_path).by_name["smollm2-135m"]
    path = s.models_dir / spec.file
    rt = dataclasses.replace(s.profile.runtime, use_mmap=mmap)
    est = model_footprint(read_gguf(path), spec, rt).total_bytes
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
              if f.name in ("name", "file", "sha256", "size_bytes", "n_ctx", "format",
                            "system_prompt")}
    grown = measured_growth_bytes(path, {**fields, "stop": [], "quality": {}},
                                  dataclasses.asdict(rt))
    assert 0 < grown <= est, (grown >> 20, est >> 20)
    assert est <= 1.5 * grown, (grown >> 20, est >> 20)
