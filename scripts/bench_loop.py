#!/usr/bin/env python3
"""The MAPE-K loop's own figures, printed:

1. The cost of one routing decision (Monitor: classify + size the prompt; Plan: predict for
   every model and choose), on the real fleet manifest and classifier, in microseconds.
2. The drift scenario: a fake fleet where the preferred model's decode time triples
   mid-run (simulated thermal throttling) and later recovers; how many requests until the
   loop moved traffic away, and until it came back.

    python scripts/bench_loop.py [--decisions 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from calm_edge.classifier import load_classifier
from calm_edge.config import load_settings
from calm_edge.fleet import fleet_from_mapping, load_fleet, verify
from calm_edge.orchestrator import Answer
from calm_edge.paths import bundled_dir
from calm_edge.runtime import build_core, close_core
from calm_edge.testing.fakes import FakeFactory, FixedClassifier, chat_request, serve_to_end
from calm_edge.testing.tiny_gguf import write_tiny_gguf


def queries() -> list[str]:
    path = bundled_dir("models") / "classifier" / "test.jsonl"
    with path.open() as fh:
        return [json.loads(line)["text"] for line in fh][:500]


async def decision_cost(n: int) -> dict[str, float]:
    settings = load_settings("x86-dev")
    fleet = load_fleet(settings.fleet_path)
    core = build_core(settings, fleet, FakeFactory(), load_classifier(), rng=random.Random(0))
    await core.residency.scan()
    orch = core.orchestrator
    texts = queries()
    reqs = [chat_request(f"d{i}", t, max_tokens=256) for i, t in enumerate(texts)]
    for r in reqs[:50]:  # warm up
        orch.route(r)
    times_us = []
    classify_us = []
    for i in range(n):
        r = reqs[i % len(reqs)]
        t0 = time.perf_counter()
        orch.classifier.classify(texts[i % len(texts)])
        t1 = time.perf_counter()
        orch.route(r)
        t2 = time.perf_counter()
        classify_us.append((t1 - t0) * 1e6)
        times_us.append((t2 - t1) * 1e6)
    await close_core(core)
    q = statistics.quantiles(times_us, n=100)
    qc = statistics.quantiles(classify_us, n=100)
    return {"decisions": n, "route_p50_us": statistics.median(times_us), "route_p99_us": q[98],
            "classify_p50_us": statistics.median(classify_us), "classify_p99_us": qc[98],
            "models": len(fleet.models)}


async def drift_scenario(probe_every: int) -> dict[str, int | None]:
    tmp = Path(tempfile.mkdtemp(prefix="calm-drift-"))
    gguf = write_tiny_gguf(tmp / "tiny.gguf")
    size = gguf.stat().st_size
    import hashlib

    sha = hashlib.sha256(gguf.read_bytes()).hexdigest()
    raw = {"default_model": "fast", "model": [
        {"name": name, "file": "tiny.gguf", "sha256": sha, "size_bytes": size, "n_ctx": 512,
         "quality": {"code": q}} for name, q in (("fast", 0.80), ("backup", 0.75))]}
    fleet = fleet_from_mapping(raw, tmp / "fleet.toml")
    for spec in fleet.models:
        verify(tmp, spec)
    settings = load_settings("x86-dev", cli={
        "paths": {"state_dir": str(tmp / "state"), "models_dir": str(tmp)},
        "loop": {"explore_epsilon": "0", "probe_degraded_every": str(probe_every)}})
    factory = FakeFactory(answer_tokens=20, sim_token_ms={"fast": 10.0, "backup": 14.0})
    core = build_core(settings, fleet, factory, FixedClassifier("code"), budget_bytes=1 << 30,
                      rng=random.Random(0))
    await core.residency.scan()
    orch = core.orchestrator

    async def ask(i: int) -> Answer:
        return await serve_to_end(orch, chat_request(f"r{i}", "x"))

    i = 0
    for _ in range(12):
        await ask(i)
        i += 1
    factory.sim_token_ms["fast"] = 30.0
    moved = None
    for k in range(1, 30):
        a = await ask(i)
        i += 1
        if a.model == "backup" and not a.explored:
            moved = k
            break
    degraded = orch.knowledge.health_of("fast").degraded
    factory.sim_token_ms["fast"] = 10.0
    returned = None
    for k in range(1, 60):
        a = await ask(i)
        i += 1
        if a.model == "fast" and not orch.knowledge.health_of("fast").degraded:
            returned = k
            break
    await close_core(core)
    return {"probe_degraded_every": probe_every, "flagged_degraded": int(degraded),
            "requests_until_traffic_moved": moved, "requests_until_it_returned": returned}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--decisions", type=int, default=2000)
    args = ap.parse_args()
    cost = asyncio.run(decision_cost(args.decisions))
    print(f"routing decision (classify + plan over {cost['models']:.0f} models), "
          f"{cost['decisions']:.0f} decisions: p50 {cost['route_p50_us']:.0f} us, "
          f"p99 {cost['route_p99_us']:.0f} us (target p99 < 1000 us); of which classify "
          f"p50 {cost['classify_p50_us']:.0f} us, p99 {cost['classify_p99_us']:.0f} us")
    drift = asyncio.run(drift_scenario(probe_every=10))
    print(f"drift: fast model 3x slower -> flagged degraded: {bool(drift['flagged_degraded'])}, "
          f"traffic moved after {drift['requests_until_traffic_moved']} requests; recovered "
          f"-> traffic back after {drift['requests_until_it_returned']} requests "
          f"(degraded models probed every {drift['probe_degraded_every']} requests)")
    print(json.dumps({"decision": cost, "drift": drift}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
