#!/usr/bin/env python3
"""Confidence signals of the small models on the outcome corpus, graded: the data cascades
are calibrated and measured on.

    .venv/bin/python scripts/label_confidence.py [--models smollm2-135m,gemma3-270m,...]
        [--out models/router/confidence.jsonl] [--limit N] [--graded-by MODEL]

Each model answers every query of models/router/outcome_corpus.jsonl greedily, through the
daemon's own backend and prompt handling (calm_edge.backends.llama_cpp, the manifest's
system prompt and stop strings, the profile's runtime), asking for the chosen tokens'
log-probabilities; the answer is graded (calm_edge.bench.graders; code in the sandboxed
subprocess) and one JSON line is written per (query, model) with the signals
(calm_edge.confidence.signals_of), the grade, token counts and the time taken. Resumable:
lines already in --out are kept and skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from calm_edge.backends.base import ChatMessage, GenerationRequest, SamplingParams
from calm_edge.backends.llama_cpp import LlamaCppBackend
from calm_edge.bench.graders import grade
from calm_edge.bench.workload import load_workload
from calm_edge.confidence import signals_of
from calm_edge.config import load_settings
from calm_edge.events import Final
from calm_edge.execute import prepare_request
from calm_edge.fleet import load_fleet, model_path
from calm_edge.paths import bundled_dir
from calm_edge.progress import Progress

SMALL = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(SMALL),
                    help="MODEL or MODEL:DOMAIN+DOMAIN, comma-separated (default: every "
                    "domain)")
    ap.add_argument("--graded-by", metavar="MODEL",
                    help="only queries whose answer by MODEL is graded in outcomes.jsonl "
                    "(the escalation target: a cascade is judged against its answers)")
    ap.add_argument("--out", type=Path,
                    default=bundled_dir("models") / "router" / "confidence.jsonl")
    ap.add_argument("--corpus", type=Path,
                    default=bundled_dir("models") / "router" / "outcome_corpus.jsonl")
    ap.add_argument("--profile", default="x86-dev")
    ap.add_argument("--limit", type=int, help="the first N queries only")
    args = ap.parse_args()
    s = load_settings(args.profile)
    fleet = load_fleet(s.fleet_path)
    queries = load_workload(args.corpus)[: args.limit]
    if args.graded_by:
        outcomes = bundled_dir("models") / "router" / "outcomes.jsonl"
        graded = {r["query_id"] for r in map(json.loads, outcomes.read_text().splitlines())
                  if r["model"] == args.graded_by}
        queries = [q for q in queries if q.id in graded]
    done: set[tuple[str, str]] = set()
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done.add((r["query_id"], r["model"]))
    with args.out.open("a") as out:
        for item in args.models.split(","):
            name, _, doms = item.partition(":")
            spec = fleet.by_name[name]
            todo = [q for q in queries if (q.id, name) not in done
                    and (not doms or q.domain in doms.split("+"))]
            if not todo:
                continue
            backend = LlamaCppBackend(spec, model_path(s.models_dir, spec), s.profile.runtime)
            progress = Progress(f"{name}", len(todo), unit="query")
            try:
                for q in todo:
                    assert q.messages is not None
                    req = prepare_request(spec, GenerationRequest(
                        SamplingParams(max_tokens=q.max_tokens, temperature=0.0, seed=0),
                        messages=tuple(ChatMessage(m["role"], m["content"])  # type: ignore[arg-type]
                                       for m in q.messages), confidence=True))
                    t0 = time.monotonic()
                    parts: list[str] = []
                    stats = None
                    for item in backend.generate(req, lambda: False):
                        if isinstance(item, Final):
                            stats = item.value
                        else:
                            parts.append(item.text)
                    latency_s = time.monotonic() - t0
                    assert stats is not None
                    text = "".join(parts)
                    passed, detail = grade(q.grader, text, q.grader_args)
                    sig = signals_of(text, stats, q.domain, q.messages[-1]["content"])
                    out.write(json.dumps({
                        "query_id": q.id, "model": name, "domain": q.domain,
                        "passed": passed, "detail": detail[:120],
                        "signals": sig.to_json() if sig else None,
                        "completion_tokens": stats.completion_tokens,
                        "prompt_tokens": stats.prompt_tokens,
                        "finish_reason": stats.finish_reason,
                        "latency_ms": round(latency_s * 1000, 1),
                        "text": text}) + "\n")
                    out.flush()
                    progress.update()
            finally:
                progress.close()
                backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
