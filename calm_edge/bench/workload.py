"""The benchmark workload: queries with checkable answers, their selection and arrival order.

The workload ships as package data (`calm_edge/bench/data/workload.jsonl`, built by
`scripts/build_bench_workload.py`; see `data/DATA_CARD.md`). One JSON object per line:

| field | meaning |
| --- | --- |
| `id` | unique, stable (`<domain>-<source key>`) |
| `domain` | `code`, `math`, `factual` or `instruct` (calm_edge.domains) |
| `messages` | OpenAI chat messages (every query here is one user message) |
| `prompt` | a raw completion prompt instead of `messages` (unused by the shipped workload) |
| `grader`, `grader_args` | how to grade a reply (calm_edge.bench.graders) |
| `max_tokens` | the generation budget |
| `source`, `licence` | where the query comes from and under which licence |
| `reference` | a reply that passes the grader (a self-check of grader and data; never sent) |
| `tags` | free-form facts (math `steps`, the HumanEval `task_id`, ...) |

Pure functions, no I/O except `load_workload`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_WORKLOAD = DATA_DIR / "workload.jsonl"

Pattern = Literal["steady", "shifting"]
PATTERNS: tuple[Pattern, ...] = ("steady", "shifting")
BURST_LEN = 16  # `shifting`: queries of one domain in a row (or fewer, at a domain's end)


class WorkloadError(ValueError):
    pass


@dataclass(frozen=True)
class Query:
    id: str
    domain: str
    messages: tuple[Mapping[str, str], ...] | None
    prompt: str | None
    grader: str
    grader_args: Mapping[str, Any]
    max_tokens: int
    source: str
    licence: str
    reference: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """What a router reads: the last user message, or the prompt."""
        if self.messages is not None:
            users = [m["content"] for m in self.messages if m.get("role") == "user"]
            return users[-1] if users else ""
        return self.prompt or ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "domain": self.domain}
        if self.messages is not None:
            d["messages"] = [dict(m) for m in self.messages]
        else:
            d["prompt"] = self.prompt
        d.update({"grader": self.grader, "grader_args": dict(self.grader_args),
                  "max_tokens": self.max_tokens, "source": self.source,
                  "licence": self.licence, "reference": self.reference,
                  "tags": dict(self.tags)})
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Query:
        messages = d.get("messages")
        prompt = d.get("prompt")
        if (messages is None) == (prompt is None):
            raise WorkloadError(f"query {d.get('id')!r}: give exactly one of messages, prompt")
        return cls(
            id=str(d["id"]), domain=str(d["domain"]),
            messages=None if messages is None else tuple(
                {"role": str(m["role"]), "content": str(m["content"])} for m in messages),
            prompt=None if prompt is None else str(prompt),
            grader=str(d["grader"]), grader_args=dict(d.get("grader_args") or {}),
            max_tokens=int(d["max_tokens"]), source=str(d.get("source", "")),
            licence=str(d.get("licence", "")), reference=d.get("reference"),
            tags=dict(d.get("tags") or {}))


def load_workload(path: Path | None = None) -> list[Query]:
    """Read a workload file (default: the shipped one). Raises WorkloadError naming the
    line for malformed records, duplicate ids or unknown graders."""
    from calm_edge.bench.graders import GRADERS

    path = path or DEFAULT_WORKLOAD
    queries: list[Query] = []
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise WorkloadError(f"cannot read workload {path}: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            q = Query.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError) as e:
            raise WorkloadError(f"{path}:{n}: bad query record: {e}") from None
        if q.id in seen:
            raise WorkloadError(f"{path}:{n}: duplicate id {q.id!r}")
        if q.grader not in GRADERS:
            raise WorkloadError(f"{path}:{n}: unknown grader {q.grader!r}")
        seen.add(q.id)
        queries.append(q)
    if not queries:
        raise WorkloadError(f"workload {path} is empty")
    return queries


def workload_digest(queries: Iterable[Query]) -> str:
    """A short hash of the queries' content, recorded with results so a resumed run can tell
    it is replaying the same workload."""
    h = hashlib.sha256()
    for q in queries:
        h.update(json.dumps(q.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


CORPUS_FILES = ("train.jsonl", "val.jsonl", "test.jsonl", "fresh_queries.jsonl")
SHINGLE_WORDS = 10  # the classifier corpus builder's own overlap rule with HumanEval


def read_corpus_texts(corpus_dir: Path) -> list[str]:
    """The `text` of every record of the classifier's corpus files (models/classifier)."""
    texts: list[str] = []
    for name in CORPUS_FILES:
        path = corpus_dir / name
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    texts.append(str(json.loads(line)["text"]))
    return texts


def _shingles(normalized: str, n: int = SHINGLE_WORDS) -> set[tuple[str, ...]]:
    words = normalized.split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def corpus_overlap(queries: Iterable[Query], corpus_texts: Iterable[str],
                   ) -> list[tuple[str, str]]:
    """(query id, how) for every query whose text is in the corpus: `exact` (same string),
    `normalized` (same after calm_edge.bench.graders.normalize: case, accents, punctuation,
    whitespace) or `shingle` (a run of SHINGLE_WORDS normalized words in common)."""
    from calm_edge.bench.graders import normalize

    texts = list(corpus_texts)
    exact = set(texts)
    normalized = {normalize(t) for t in texts}
    shingles: set[tuple[str, ...]] = set()
    for t in normalized:
        shingles |= _shingles(t)
    found: list[tuple[str, str]] = []
    for q in queries:
        norm = normalize(q.text)
        if q.text in exact:
            found.append((q.id, "exact"))
        elif norm in normalized:
            found.append((q.id, "normalized"))
        elif _shingles(norm) & shingles:
            found.append((q.id, "shingle"))
    return found


def select(queries: Sequence[Query], domains: Sequence[str] | None = None,
           limit: int | None = None) -> list[Query]:
    """Keep the queries of `domains` (all if None) and, with `limit`, the first `limit`
    queries of each domain in file order. Order is preserved."""
    kept: list[Query] = []
    per_domain: dict[str, int] = {}
    for q in queries:
        if domains is not None and q.domain not in domains:
            continue
        if limit is not None and per_domain.get(q.domain, 0) >= limit:
            continue
        per_domain[q.domain] = per_domain.get(q.domain, 0) + 1
        kept.append(q)
    return kept


def arrange(queries: Sequence[Query], pattern: Pattern, seed: int) -> list[Query]:
    """The arrival order of the same queries.

    `steady`: domains interleaved: rounds that take the next query of every domain with
    queries left, in a shuffled domain order per round. `shifting`: bursts of `BURST_LEN`
    queries of one domain, the next burst from a different domain where possible. Within a
    domain the order is a seeded shuffle. Deterministic for (queries, pattern, seed).
    """
    rng = random.Random(f"arrange:{pattern}:{seed}")
    by_domain: dict[str, list[Query]] = {}
    for q in queries:
        by_domain.setdefault(q.domain, []).append(q)
    for d in sorted(by_domain):
        rng.shuffle(by_domain[d])
    out: list[Query] = []
    if pattern == "steady":
        while any(by_domain.values()):
            order = sorted(d for d, qs in by_domain.items() if qs)
            rng.shuffle(order)
            out.extend(by_domain[d].pop(0) for d in order)
        return out
    if pattern == "shifting":
        last: str | None = None
        while any(by_domain.values()):
            choices = sorted(d for d, qs in by_domain.items() if qs and d != last) or \
                sorted(d for d, qs in by_domain.items() if qs)
            d = rng.choice(choices)
            burst, by_domain[d] = by_domain[d][:BURST_LEN], by_domain[d][BURST_LEN:]
            out.extend(burst)
            last = d
        return out
    raise WorkloadError(f"unknown pattern {pattern!r} (known: {', '.join(PATTERNS)})")
