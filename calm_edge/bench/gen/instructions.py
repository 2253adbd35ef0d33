"""Verifiable instructions (IFEval-style): a base request plus constraints that a checker
can verify (calm_edge.bench.graders' "instructions" grader), and a reference reply that
satisfies them.

The bench workload and the outcome corpus share the constraint kinds, which kinds cannot be
combined (`CONFLICTS`) and the reference composer; each has its own base requests,
phrasings and argument pools (`ConstraintStyle`, from data/instructions.json). The
classifier corpus combines its own bases and constraint sentences (`CLASSIFIER_BASES`,
`CLASSIFIER_CONSTRAINTS`), ungraded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from calm_edge.bench.gen.common import OWN_LICENCE, R, seeds, user
from calm_edge.bench.workload import Query

_SEEDS = seeds("instructions")
CONFLICTS: frozenset[frozenset[str]] = frozenset(frozenset(p) for p in _SEEDS["conflicts"])
FILLER: list[str] = _SEEDS["filler"]
CLASSIFIER_BASES: list[str] = _SEEDS["classifier"]["bases"]
CLASSIFIER_CONSTRAINTS: list[str] = _SEEDS["classifier"]["constraints"]

INSTRUCT_MAX_TOKENS = 256
CheckArgs = dict[str, Any]  # {"kind": ..., and the kind's arguments}


@dataclass(frozen=True)
class ConstraintStyle:
    """A corpus's base requests, the phrasing of each constraint kind (str.format over the
    check's arguments) and the pools the arguments are drawn from."""

    topics: tuple[str, ...]
    phrases: Mapping[str, str]
    counts: Mapping[str, Sequence[int]]   # bullets, numbered, max_words, min_words
    include_pool: tuple[str, ...]
    exclude_pool: tuple[tuple[str, str], ...]
    end_phrases: tuple[str, ...]
    start_words: tuple[str, ...]
    json_keys: tuple[str, ...]

    @classmethod
    def of(cls, corpus: str) -> ConstraintStyle:
        """"bench" or "outcome"."""
        d = _SEEDS[corpus]
        return cls(tuple(d["topics"]), d["phrases"], d["counts"], tuple(d["include_pool"]),
                   tuple((a, b) for a, b in d["exclude_pool"]), tuple(d["end_phrases"]),
                   tuple(d["start_words"]), tuple(d["json_keys"]))

    @property
    def kinds(self) -> list[str]:
        """The constraint kinds, sorted."""
        return sorted(self.phrases)

    def check_args(self, rng: R, kind: str) -> CheckArgs:
        """A check of `kind` with its arguments drawn (at most one draw)."""
        a: CheckArgs = {"kind": kind}
        if kind in ("bullets", "numbered"):
            a["n"] = rng.choice(self.counts[kind])
        elif kind == "include_words":
            a["words"] = rng.sample(self.include_pool, 2)
        elif kind == "exclude_words":
            a["words"] = list(rng.choice(self.exclude_pool))
        elif kind in ("max_words", "min_words"):
            a["n"] = rng.choice(self.counts[kind])
        elif kind == "ends_with":
            a["phrase"] = rng.choice(self.end_phrases)
        elif kind == "starts_with":
            a["word"] = rng.choice(self.start_words)
        elif kind == "json_key":
            a["key"] = rng.choice(self.json_keys)
        return a

    def request(self, topic: str, checks: Sequence[CheckArgs]) -> str:
        """The base request followed by each constraint's sentence."""
        return " ".join([topic, *(self.phrases[c["kind"]].format(**c) for c in checks)])


def compatible(kinds: Sequence[str]) -> bool:
    """No two of `kinds` conflict (a reply could satisfy them all)."""
    return all(frozenset((a, b)) not in CONFLICTS
               for i, a in enumerate(kinds) for b in kinds[i + 1:])


def compose_reference(checks: Sequence[CheckArgs]) -> str:
    """A reply that satisfies `checks` (content is filler): the graders' self-check."""
    kinds = {c["kind"]: c for c in checks}
    include = " ".join(f"The {w} fits here." for w in kinds.get("include_words", {}).get(
        "words", []))
    if "json_key" in kinds:
        value = f"A short answer on this topic. {include}".strip()
        if "lowercase" in kinds:
            value = value.lower()
        return json.dumps({kinds["json_key"]["key"]: value})
    lines: list[str] = []
    if "title" in kinds:
        lines.append("<<A Short Answer>>")
    first = kinds.get("starts_with", {}).get("word", "Here")
    lines.append(f"{first} is a short answer.")
    if "bullets" in kinds:
        lines += [f"* Point {i + 1} about the topic" for i in range(kinds["bullets"]["n"])]
    if "numbered" in kinds:
        lines += [f"{i + 1}. Step {i + 1} of the plan" for i in range(kinds["numbered"]["n"])]
    if include:
        lines.append(include)
    if "min_words" in kinds:
        i = 0
        while sum(len(x.split()) for x in lines) < kinds["min_words"]["n"] + 5:
            lines.append(FILLER[i % len(FILLER)])
            i += 1
    if "postscript" in kinds:
        lines.append("P.S. Thank you for asking.")
    if "ends_with" in kinds:
        lines.append(kinds["ends_with"]["phrase"])
    text = "\n".join(lines)
    if "lowercase" in kinds:
        text = text.lower()
    if "uppercase" in kinds:
        text = text.upper()
    if "quoted" in kinds:
        text = f'"{text}"'
    return text


def instruct_query(qid: str, style: ConstraintStyle, topic: str, checks: Sequence[CheckArgs],
                   source: str, tags: Mapping[str, Any]) -> Query:
    """One graded instruct query: `topic` with `checks`, and its composed reference."""
    return Query(
        id=qid, domain="instruct", messages=user(style.request(topic, checks)), prompt=None,
        grader="instructions", grader_args={"checks": list(checks)},
        max_tokens=INSTRUCT_MAX_TOKENS, source=source, licence=OWN_LICENCE,
        reference=compose_reference(checks), tags=dict(tags))
