#!/usr/bin/env python3
"""How a fresh daemon routes the bench workload before any answer: with the manifest's
priors only, with this device's calibration, and with a calibration edited to what another
CPU measured (SmolLM2 failing its factual canaries, as on an AVX2-only EPYC).

    .venv/bin/python scripts/calibration_routing.py --state-dir DIR [--profile x86-dev]
        [--fail smollm2-135m:factual:2] [--mode balanced]

DIR holds a knowledge store written by `calm-edge calibrate --state-dir DIR`. Planning only
(the real classifier, outcome model and planner; nothing is generated), so it shows the
cold-start decision that calibration changes. Prints the models chosen per domain.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import random
import sys
from pathlib import Path

from calm_edge.backends.base import ChatMessage, GenerationRequest, SamplingParams
from calm_edge.bench.workload import load_workload
from calm_edge.calibration import ModelCalibration
from calm_edge.calibration.results import DomainScore
from calm_edge.classifier import load_classifier
from calm_edge.config import load_settings
from calm_edge.fleet import load_fleet
from calm_edge.knowledge import KnowledgeStore
from calm_edge.orchestrator import ServeRequest
from calm_edge.outcome import OutcomeModel
from calm_edge.runtime import build_core, close_core
from calm_edge.testing.fakes import FakeFactory


def failing(cal: ModelCalibration, domain: str, passed: int) -> ModelCalibration:
    s = cal.domains[domain]
    return dataclasses.replace(cal, domains={**cal.domains, domain: DomainScore(
        passed, s.total, s.natural_tokens, s.limit_share)})


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state-dir", type=Path, required=True)
    ap.add_argument("--profile", default="x86-dev")
    ap.add_argument("--mode", default="balanced")
    ap.add_argument("--fail", default="smollm2-135m:factual:2",
                    help="MODEL:DOMAIN:PASSED for the edited calibration")
    args = ap.parse_args()
    from calm_edge.backends.llama_cpp import build_info

    s = load_settings(args.profile, cli={"paths": {"state_dir": str(args.state_dir)}})
    fleet = load_fleet(s.fleet_path)
    store = KnowledgeStore(args.state_dir / "knowledge.db", retention_days=30,
                           max_requests=1000)
    await store.open()
    classifier, outcome = load_classifier(), OutcomeModel.load(None)
    core = build_core(s, fleet, FakeFactory(), classifier, store=store, outcome=outcome,
                      backend_build=build_info(), rng=random.Random(0))
    await core.residency.scan()
    assert core.calibrator is not None
    cal = await core.calibrator.results()
    if not cal:
        print(f"no calibration for device {core.calibrator.identity.key} in "
              f"{args.state_dir}", file=sys.stderr)
        return 2
    model, domain, passed = args.fail.split(":")
    edited = {**cal, model: failing(cal[model], domain, int(passed))}
    queries = load_workload()
    table: dict[str, dict[str, collections.Counter[str]]] = {}
    reasons: dict[str, str] = {}
    orch = core.orchestrator
    for label, results in (("manifest priors", {}), ("this device's calibration", cal),
                           (f"calibration with {model} {domain} {passed}/10", edited)):
        orch.apply_calibration(results)
        counts: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter)
        for q in queries:
            assert q.messages is not None
            req = ServeRequest(rid=q.id, kind="chat", model="auto", mode=args.mode,
                               request=GenerationRequest(
                                   SamplingParams(max_tokens=q.max_tokens, temperature=0.0),
                                   messages=tuple(ChatMessage(m["role"], m["content"])  # type: ignore[arg-type]
                                                  for m in q.messages)))
            routed = orch.route(req)
            counts[q.domain][routed.plan.model] += 1
            if q.domain == domain == routed.query.domain \
                    and label.startswith("calibration with"):
                reasons.setdefault(routed.plan.model, routed.plan.reason)
        table[label] = counts
    for label, counts in table.items():
        print(f"\n{label} ({args.mode}, before any answer):")
        for d in ("code", "math", "factual", "instruct"):
            row = ", ".join(f"{m} {n}" for m, n in counts[d].most_common())
            print(f"  {d:<9} {row}")
    print(f"\nreasons ({domain}, edited calibration):")
    for m, r in reasons.items():
        print(f"  -> {m}: {r}")
    await close_core(core)
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
