#!/usr/bin/env python3
"""Speculative decoding on CPU vs plain greedy: tok/s per domain, token identity (issue 17).

Issue 17 item 4: greedy tokens/s per domain, baseline vs prompt lookup vs a draft model,
with token identity checked against the baseline.

Target qwen2.5-coder-1.5b, draft qwen2.5-coder-0.5b (same tokenizer), both loaded with the
profile's runtime through LlamaCppBackend, prompts rendered with its chat template. For
each of the first N workload queries of each domain, every method decodes greedily with
the query's max_tokens (capped by --max-tokens); methods run interleaved per query so that
load from other processes hits them alike. See calm_edge.backends.speculative.

Columns: tok/s = sum(tokens - 1) / sum(decode seconds after the first token), summed over
the domain's queries (prompt pass excluded; the draft model's prompt pass is in it, see
prompt_s); speed-up = tok/s / baseline tok/s; e2e = baseline (prompt + decode) seconds /
the method's; accept = accepted / drafted draft tokens; identical = queries whose tokens
equal the baseline's; extra_MB = RSS growth from loading the draft model (measured) or the
llama.cpp logits rows a lookup batch needs ((k + 1) x n_vocab floats, computed). Verdict:
a method wins where it is >= 10% faster overall and token-identical on every query.

    python scripts/bench_speculative.py [--per-domain 4] [--max-tokens N] [--json OUT]
        [--threads N] [--lookup-k 4,8] [--draft-k 2,4]

Identity caveat: llama.cpp's CPU kernels for a batch of several tokens round differently
from the single-token ones (Q4_K, 1.5B: logits up to ~0.45 apart), so where the top two
logits are nearly tied a verified batch can pick the other token; `identical` counts it and
the JSON names the first differing position.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calm_edge.backends.base import ChatMessage, GenerationRequest, SamplingParams
from calm_edge.backends.llama_cpp import LlamaCppBackend, build_info, usable_cpus
from calm_edge.backends.speculative import (
    DraftModel,
    GreedyRun,
    PromptLookup,
    decode_batch,
    greedy,
    speculative,
    truncate,
)
from calm_edge.bench.workload import Query, load_workload, select
from calm_edge.config import load_settings
from calm_edge.domains import DOMAINS
from calm_edge.fleet import FileStatus, load_fleet, model_path, verify
from calm_edge.memory import process_rss_bytes

WIN = 1.10  # the speed-up a method needs to ship (issue 17 item 4)


@dataclass
class Tally:
    """One (domain, method) cell: sums over its queries."""

    tokens_after_first: int = 0
    decode_s: float = 0.0
    total_s: float = 0.0
    drafted: int = 0
    accepted: int = 0
    target_evals: int = 0
    queries: int = 0
    identical: int = 0
    mismatches: list[str] = field(default_factory=list)

    def add(self, run: GreedyRun, same: bool, qid: str) -> None:
        self.tokens_after_first += max(len(run.tokens) - 1, 0)
        self.decode_s += run.decode_s
        self.total_s += run.prompt_s + run.decode_s
        self.drafted += run.drafted
        self.accepted += run.accepted
        self.target_evals += run.target_evals
        self.queries += 1
        self.identical += same
        if not same:
            self.mismatches.append(qid)

    @property
    def tok_s(self) -> float:
        return self.tokens_after_first / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None


def load(settings: Any, name: str) -> tuple[LlamaCppBackend, int]:
    """A verified fleet model through the real backend; (backend, RSS growth bytes)."""
    spec = load_fleet(settings.fleet_path).get(name)
    if spec is None:
        sys.exit(f"unknown model {name}")
    if verify(settings.models_dir, spec) is not FileStatus.VERIFIED:
        sys.exit(f"{name} is not installed: calm-edge models pull {name}")
    rss0 = process_rss_bytes()
    backend = LlamaCppBackend(spec, model_path(settings.models_dir, spec),
                              settings.profile.runtime)
    return backend, process_rss_bytes() - rss0


def prompt_tokens(backend: LlamaCppBackend, q: Query) -> list[int]:
    """The query's prompt exactly as the backend renders and tokenizes it."""
    if q.messages is not None:
        msgs = tuple(ChatMessage(m["role"], m["content"]) for m in q.messages)  # type: ignore[arg-type]
        req = GenerationRequest(SamplingParams(temperature=0.0), messages=msgs)
    else:
        req = GenerationRequest(SamplingParams(temperature=0.0), prompt=q.prompt)
    return backend._prompt_tokens(req)[0]


def batch_cost_ms(llm: Any, prompt: list[int], sizes: list[int], reps: int = 3,
                  ) -> dict[int, float]:
    """Median ms of one target decode of n tokens (logits for all) after `prompt`: what
    verifying n - 1 drafts costs against one plain step."""
    greedy(llm, prompt, 1)
    out: dict[int, float] = {}
    for n in sizes:
        times = []
        for _ in range(reps):
            truncate(llm, len(prompt))
            t0 = time.perf_counter()
            decode_batch(llm, prompt[-n:])  # any tokens: the cost depends on n only
            times.append(time.perf_counter() - t0)
        out[n] = 1000 * statistics.median(times)
    truncate(llm, len(prompt))
    return out


def first_diff(a: list[int], b: list[int]) -> int:
    pairs = enumerate(zip(a, b, strict=False))
    return next((i for i, (x, y) in pairs if x != y), min(len(a), len(b)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-domain", type=int, default=4, help="queries per domain")
    ap.add_argument("--max-tokens", type=int, default=0,
                    help="cap on each query's max_tokens (0 = the query's own)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--profile", default="x86-dev")
    ap.add_argument("--threads", type=int, default=0,
                    help="n_threads for both models (0 = the profile's). On a shared box, "
                         "fewer threads than free cores: OpenMP workers spin at barriers and "
                         "collapse when a core is taken away")
    ap.add_argument("--target", default="qwen2.5-coder-1.5b")
    ap.add_argument("--draft", default="qwen2.5-coder-0.5b")
    ap.add_argument("--lookup-k", default="4,8", help="prompt-lookup draft lengths")
    ap.add_argument("--draft-k", default="2,4", help="draft-model draft lengths")
    ap.add_argument("--ngram", type=int, default=3, help="prompt lookup's longest n-gram")
    args = ap.parse_args()

    def err(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    cli = {"runtime": {"n_threads": args.threads}} if args.threads else None
    settings = load_settings(args.profile, cli=cli)
    rt = settings.profile.runtime
    err(f"{build_info()}\nthreads {rt.n_threads or usable_cpus()}, n_batch {rt.n_batch}, "
        f"n_ubatch {rt.micro_batch}")
    target, target_rss = load(settings, args.target)
    draft, draft_rss = load(settings, args.draft)
    tl, dl = target._llm, draft._llm
    n_vocab = tl.n_vocab()
    if dl.n_vocab() != n_vocab:
        sys.exit(f"{args.draft} has {dl.n_vocab()} tokens, {args.target} {n_vocab}")
    err(f"loaded {args.target} (+{target_rss / 2**20:.0f} MiB) and {args.draft} "
        f"(+{draft_rss / 2**20:.0f} MiB)")

    methods: dict[str, Callable[[list[int], int], GreedyRun]] = {
        "baseline": lambda p, n: greedy(tl, p, n)}
    extra_mb: dict[str, float] = {"baseline": 0.0}
    for k in (int(x) for x in args.lookup_k.split(",") if x):
        name = f"lookup-k{k}"
        methods[name] = (lambda kk: lambda p, n: speculative(
            tl, p, n, PromptLookup(max_ngram=args.ngram, k=kk)))(k)
        extra_mb[name] = (k + 1) * n_vocab * 4 / 2**20
    for k in (int(x) for x in args.draft_k.split(",") if x):
        name = f"draft-k{k}"
        methods[name] = (lambda kk: lambda p, n: speculative(
            tl, p, n, DraftModel(dl, k=kk)))(k)
        extra_mb[name] = draft_rss / 2**20 + (k + 1) * n_vocab * 4 / 2**20

    queries = select(load_workload(), limit=args.per_domain)
    domains = [d for d in DOMAINS if any(q.domain == d for q in queries)]
    prompts = {q.id: prompt_tokens(target, q) for q in queries}
    if any(prompt_tokens(draft, q) != prompts[q.id] for q in queries[:3]):
        sys.exit(f"{args.draft} tokenizes prompts differently from {args.target}")

    warm = prompts[queries[0].id]
    for fn in methods.values():  # first decodes allocate buffers
        fn(warm, 8)

    ks = sorted({1} | {int(n.split("-k")[1]) + 1 for n in methods if "-k" in n})
    cost = batch_cost_ms(tl, warm, ks)
    err("target decode of n tokens: " + ", ".join(
        f"n={n} {ms:.0f} ms ({ms / cost[1]:.2f}x)" for n, ms in cost.items()))

    cells: dict[tuple[str, str], Tally] = {}
    per_query: list[dict[str, Any]] = []
    t_start = time.monotonic()
    for i, q in enumerate(queries, 1):
        budget = min(q.max_tokens, args.max_tokens) if args.max_tokens else q.max_tokens
        p = prompts[q.id]
        base: GreedyRun | None = None
        row: dict[str, Any] = {"id": q.id, "domain": q.domain, "prompt_tokens": len(p),
                               "max_tokens": budget, "methods": {}}
        for name, fn in methods.items():
            run = fn(p, budget)
            base = base or run
            same = run.tokens == base.tokens
            for dom in (q.domain, "all"):
                cells.setdefault((dom, name), Tally()).add(run, same, q.id)
            row["methods"][name] = {
                "tokens": len(run.tokens), "finish": run.finish,
                "prompt_s": round(run.prompt_s, 4), "decode_s": round(run.decode_s, 4),
                "decode_tok_s": round(run.decode_tok_s, 2), "target_evals": run.target_evals,
                "drafted": run.drafted, "accepted": run.accepted, "identical": same,
                **({} if same else {"first_diff": first_diff(run.tokens, base.tokens)})}
        per_query.append(row)
        summary = "  ".join(f"{n} {m['decode_tok_s']:.1f}{'' if m['identical'] else '!'}"
                            for n, m in row["methods"].items())
        err(f"[{i}/{len(queries)} {time.monotonic() - t_start:.0f}s] {q.id} "
            f"({len(p)} prompt, {row['methods']['baseline']['tokens']} tokens): {summary}")

    rows: list[dict[str, Any]] = []
    for dom in [*domains, "all"]:
        b = cells[(dom, "baseline")]
        for name in methods:
            c = cells[(dom, name)]
            rows.append({
                "domain": dom, "method": name, "queries": c.queries,
                "tokens": c.tokens_after_first, "tok_s": round(c.tok_s, 2),
                "speedup": round(c.tok_s / b.tok_s, 3) if b.tok_s else None,
                "e2e_speedup": round(b.total_s / c.total_s, 3) if c.total_s else None,
                "acceptance": None if c.acceptance is None else round(c.acceptance, 3),
                "tokens_per_eval": round((c.tokens_after_first / c.target_evals), 2)
                if c.target_evals else None,
                "identical": f"{c.identical}/{c.queries}", "mismatches": c.mismatches,
                "extra_mb": round(extra_mb[name], 1)})

    print(f"{'domain':9} {'method':11} {'tok/s':>7} {'speed-up':>8} {'e2e':>6} "
          f"{'accept':>6} {'tok/eval':>8} {'identical':>9} {'extra_MB':>8}")
    for r in rows:
        acc = "-" if r["acceptance"] is None else f"{r['acceptance']:.2f}"
        tpe = "-" if r["tokens_per_eval"] is None else f"{r['tokens_per_eval']:.2f}"
        print(f"{r['domain']:9} {r['method']:11} {r['tok_s']:7.2f} {r['speedup'] or 0:7.2f}x "
              f"{r['e2e_speedup'] or 0:5.2f}x {acc:>6} {tpe:>8} {r['identical']:>9} "
              f"{r['extra_mb']:8.1f}")

    overall = [r for r in rows if r["domain"] == "all" and r["method"] != "baseline"]
    winners = [r for r in overall if (r["speedup"] or 0) >= WIN
               and r["identical"] == f"{r['queries']}/{r['queries']}"]
    best = max(winners, key=lambda r: r["speedup"], default=None)
    verdict = (f"ship {best['method']}: {best['speedup']:.2f}x overall, token-identical"
               if best else f"neither wins (no method >= {WIN:.2f}x and token-identical)")
    print("target decode of n tokens (batch cost): " + ", ".join(
        f"n={n} {ms:.0f} ms = {ms / cost[1]:.2f}x n=1" for n, ms in cost.items()))
    print(f"verdict: {verdict}")

    if args.json:
        args.json.write_text(json.dumps({
            "build": build_info(), "profile": args.profile, "target": args.target,
            "draft": args.draft, "per_domain": args.per_domain,
            "max_tokens_cap": args.max_tokens, "n_threads": rt.n_threads or usable_cpus(),
            "target_rss_mb": round(target_rss / 2**20, 1),
            "draft_rss_mb": round(draft_rss / 2**20, 1),
            "batch_cost_ms": {str(n): round(ms, 2) for n, ms in cost.items()}, "rows": rows,
            "queries": per_query, "verdict": verdict}, indent=1) + "\n")
    target.close()
    draft.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
