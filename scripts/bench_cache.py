#!/usr/bin/env python3
"""The response cache's near-duplicate matching on the bench workload's questions.

Every workload question is a different question with its own reference answer, and many
are near-duplicates of each other (templates: "Name the capital city of Malawi." and
"... of Malta."; word problems that differ in one number; HumanEval twins). Each question
is asked of a cache holding all the others (leave-fold-out, two foldings so that every
pair is tried): any near hit is a false hit, an answer to another question. Reported for
the rule before issue 14 (cosine >= 0.95 and the same numbers) and for ResponseCache as
configured now. Also the true hits: light rewordings of each question (its final
punctuation dropped, its commas dropped) asked of a cache holding the original.

    python scripts/bench_cache.py [--threshold 0.97]
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from calm_edge.backends.base import ChatMessage, GenerationRequest, GenerationStats, SamplingParams
from calm_edge.bench.workload import Query, load_workload
from calm_edge.cache import CachedAnswer, ResponseCache, normalize
from calm_edge.cache import _vector as vector  # the cache's own 3-gram vectors

_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
_STATS = GenerationStats(10, 5, "stop", 0.01, 0.05)


def _chat(text: str) -> GenerationRequest:
    return GenerationRequest(SamplingParams(temperature=0.0),
                             messages=(ChatMessage("user", text),))


def old_rule_false_hits(queries: list[Query]) -> list[tuple[str, str, float]]:
    """Before issue 14: the best other question at cosine >= 0.95 with the same numbers."""
    texts = [normalize(q.text) for q in queries]
    vecs = np.stack([vector(t) for t in texts])
    sims = vecs @ vecs.T
    out = []
    for i, t in enumerate(texts):
        nums = _NUMBER_RE.findall(t)
        best, best_j = 0.0, -1
        for j, u in enumerate(texts):
            if j != i and _NUMBER_RE.findall(u) == nums and sims[i, j] > best:
                best, best_j = float(sims[i, j]), j
        if best >= 0.95:
            out.append((queries[i].id, queries[best_j].id, round(best, 3)))
    return out


def cache_false_hits(queries: list[Query], make: Callable[[], ResponseCache],
                     ) -> list[tuple[str, str]]:
    """Each question asked of a cache holding the other folds: two foldings, i % 16 and
    i // 16 % 16, so that every pair of questions is in different folds at least once."""
    out = []
    for stride in (1, 16):
        for f in range(16):
            c = make()
            for i, q in enumerate(queries):
                if (i // stride) % 16 != f:
                    c.put("chat", "auto", "b", _chat(q.text),
                          CachedAnswer(q.id, "m", q.domain, _STATS, 0.0))
            for i, q in enumerate(queries):
                hit = c.get("chat", "auto", "b", _chat(q.text)) if (i // stride) % 16 == f \
                    else None
                if hit is not None:
                    out.append((q.id, hit[0].text))
    return out


def rewordings(text: str) -> list[str]:
    out = []
    stripped = text.rstrip()
    if stripped and stripped[-1] in "?.!":
        out.append(stripped[:-1])
    if "," in text:
        out.append(text.replace(",", ""))
    return out


def true_hits(queries: list[Query], make: Callable[[], ResponseCache]) -> tuple[int, int]:
    c = make()
    for q in queries:
        c.put("chat", "auto", "b", _chat(q.text), CachedAnswer(q.id, "m", q.domain, _STATS, 0.0))
    tried = hits = 0
    for q in queries:
        for variant in rewordings(q.text):
            tried += 1
            hit = c.get("chat", "auto", "b", _chat(variant))
            hits += hit is not None and hit[0].text == q.id
    return hits, tried


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threshold", type=float, default=0.97, help="cache.near_threshold")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args()
    queries = load_workload()

    def make() -> ResponseCache:
        return ResponseCache(max_entries=10_000, max_bytes=1 << 30,
                             near_threshold=args.threshold, clock=lambda: 0.0)

    old = old_rule_false_hits(queries)
    new = cache_false_hits(queries, make)
    hits, tried = true_hits(queries, make)
    n = len(queries)
    report: dict[str, Any] = {
        "questions": n, "old_false_hits": len(old), "old_false_hit_rate": len(old) / n,
        "new_false_hits": len(new), "new_false_hit_rate": len(new) / n,
        "threshold": args.threshold, "rewordings": tried, "rewording_hits": hits}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{n} workload questions, each asked of a cache holding all the others")
    print(f"before (cosine >= 0.95, same numbers): {len(old)} false hits "
          f"({len(old) / n:.1%})")
    for a, b, cos in old:
        print(f"  {a} answered as {b} (cosine {cos})")
    print(f"now (near_threshold {args.threshold}, lengths within 10%, threshold rising with "
          f"length): {len(new)} false hits ({len(new) / n:.1%})")
    for a, b in new:
        print(f"  {a} answered as {b}")
    print(f"rewordings (final punctuation or commas dropped) still served: {hits} of {tried} "
          f"({hits / max(tried, 1):.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
