"""Putting a built query set together: the domains' parts in file order, the checks every
gradable set must pass, and the files rendered, then compared (`--check`) or written."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from calm_edge.bench.graders import grade
from calm_edge.bench.workload import Query, corpus_overlap, read_corpus_texts


def in_file_order(seed: int, parts: Sequence[list[Query]]) -> list[Query]:
    """The parts (one per domain) one after the other, each shuffled by (seed, domain) so
    that the first few of a domain (what `--limit` takes) mix its templates. Shuffles the
    parts in place."""
    queries: list[Query] = []
    for part in parts:
        random.Random(f"{seed}:{part[0].domain}").shuffle(part)
        queries.extend(part)
    return queries


def duplicate_problems(queries: Sequence[Query],
                       text_key: Callable[[str], str] = lambda t: t) -> list[str]:
    """Ids used twice, and texts asked twice (compared through `text_key`)."""
    ids = Counter(q.id for q in queries)
    texts = Counter(text_key(q.text) for q in queries)
    return ([f"duplicate id {i}" for i, c in ids.items() if c > 1]
            + [f"duplicate text {t[:60]!r}" for t, c in texts.items() if c > 1])


def overlap_problems(queries: Sequence[Query], texts: Sequence[str], what: str) -> list[str]:
    """Queries equal to, equal after normalization to, or sharing a 10-word run with one
    of `texts` (calm_edge.bench.workload.corpus_overlap)."""
    return [f"{qid}: {what} ({how})" for qid, how in corpus_overlap(queries, texts)]


def classifier_corpus_problems(queries: Sequence[Query], classifier_dir: Path) -> list[str]:
    """Overlap with the classifier's corpus (`classifier_dir`/*.jsonl), which must exist."""
    corpus = read_corpus_texts(classifier_dir)
    missing = [] if corpus else ["classifier corpus not found (models/classifier/*.jsonl)"]
    return missing + overlap_problems(queries, corpus, "in the classifier corpus")


def reference_problems(queries: Sequence[Query]) -> list[str]:
    """Queries whose `reference` reply fails their own grader (data or grader is wrong)."""
    problems: list[str] = []
    for q in queries:
        ok, detail = grade(q.grader, q.reference or "", q.grader_args)
        if not ok:
            problems.append(f"{q.id}: reference fails its grader: {detail}")
    return problems


def render(queries: Sequence[Query]) -> str:
    """JSON lines, in order (calm_edge.bench.workload reads them back)."""
    return "".join(json.dumps(q.to_dict(), ensure_ascii=False) + "\n" for q in queries)


def check_or_write(files: Mapping[Path, str], check: bool) -> int:
    """With `check`, compare each file with its rebuilt text and say which differ (exit
    status 1 if any); otherwise write them (UTF-8). Prints a line per file."""
    if check:
        differ = [p for p, text in files.items()
                  if not p.exists() or p.read_text(encoding="utf-8") != text]
        for p in files:
            print(f"{p}: {'DIFFERS from a rebuild' if p in differ else 'up to date'}")
        return 1 if differ else 0
    for p, text in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        print(f"wrote {p}")
    return 0
